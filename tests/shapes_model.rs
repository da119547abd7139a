//! The committed built-in model (`assets/models/shapes`) loads through the shared pipeline
//! code, follows the prompt's background (the offset-noise fix: before it, every
//! background came out a washed-out grey that the checker rejects) and puts an object in
//! the corner the prompt names, with each colour of a two-object prompt at its own place;
//! the shift probe (does the object move with its noise?) runs on it.

use std::path::Path;

use adaptive_diffusion::sampler::SchedulerKind;
use adaptive_diffusion::shapes::check;
use adaptive_diffusion::shapes::dataset::{eval_prompt, held_out_single};
use adaptive_diffusion::shapes::{Background, Scene};
use adaptive_diffusion::train::eval::Generator;

/// The committed model, loaded through the shared pipeline code.
fn committed_model() -> Generator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes");
    Generator::load(&dir).expect("the committed model loads")
}

#[test]
fn the_built_in_model_draws_the_named_background() {
    let generator = committed_model();
    let scenes = held_out_single();
    let pick = |bg: Background| -> Vec<Scene> {
        scenes
            .iter()
            .filter(|s| s.background == bg)
            .take(2)
            .cloned()
            .collect()
    };
    let mut chosen = pick(Background::Black);
    chosen.extend(pick(Background::Gray));
    assert_eq!(chosen.len(), 4);
    for (i, scene) in chosen.iter().enumerate() {
        let prompt = eval_prompt(scene);
        let img = generator
            .generate(&prompt, 7 + i as u64, SchedulerKind::Ddim, 20, 7.5)
            .unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
        assert_eq!(
            check::background_of(&img),
            Some(scene.background),
            "wrong background for {prompt:?}"
        );
        // Not a flat image: something is drawn on the background.
        let first = *img.get_pixel(0, 0);
        assert!(img.pixels().any(|p| {
            (0..3)
                .map(|k| (p[k] as i32 - first[k] as i32).abs())
                .sum::<i32>()
                > 60
        }));
    }
}

/// The position words place the object: for held-out one-object prompts at each corner,
/// the named colour lies on the named side of both midlines. A model that knows "a corner"
/// from the words but takes which one from the seed scores about half of the sides (the
/// 15,728-step weights committed before: 6 of 16 here); the committed weights must do far
/// better.
#[test]
fn the_built_in_model_puts_the_object_in_the_named_corner() {
    use adaptive_diffusion::train::probe::color_centre;
    let generator = committed_model();
    let scenes = held_out_single();
    let mut chosen: Vec<Scene> = vec![];
    for &corner in adaptive_diffusion::shapes::Position::ALL {
        if corner.sides().is_none() {
            continue;
        }
        chosen.extend(
            scenes
                .iter()
                .filter(|s| s.objects[0].position == corner)
                .take(2)
                .cloned(),
        );
    }
    assert_eq!(chosen.len(), 8);
    let (mut right, mut judged) = (0, 0);
    for (i, scene) in chosen.iter().enumerate() {
        let prompt = eval_prompt(scene);
        let img = generator
            .generate(&prompt, 21 + i as u64, SchedulerKind::Ddim, 20, 7.5)
            .unwrap();
        let o = scene.objects[0];
        let centre = color_centre(&img, o.color, scene.background);
        right += centre.and_then(|c| o.position.sides_right(c)).unwrap_or(0);
        judged += 2;
    }
    assert!(
        right * 4 >= judged * 3,
        "the object is on the named side of only {right} of {judged} midlines"
    );
}

/// Each colour is bound to its own place: for held-out two-object prompts, the named
/// colour is at the named position for each object. The 18,600-step weights committed
/// before put both objects in place but often swapped or blended their colours (see
/// TRAINING.md); they score 10 of 20 here, the committed weights 19 of 20.
#[test]
fn the_built_in_model_binds_each_colour_to_its_place() {
    use adaptive_diffusion::shapes::dataset::held_out_pairs;
    let generator = committed_model();
    let (mut right, mut judged) = (0, 0);
    for (i, scene) in held_out_pairs(10, 3).iter().enumerate() {
        let prompt = eval_prompt(scene);
        let img = generator
            .generate(&prompt, 31 + i as u64, SchedulerKind::Ddim, 20, 7.5)
            .unwrap();
        let verdict = check::check(&img, scene);
        right += verdict.objects.iter().filter(|&&o| o).count();
        judged += verdict.objects.len();
    }
    eprintln!("{right} of {judged} objects right");
    assert!(
        right * 5 >= judged * 4,
        "only {right} of {judged} objects have the named colour at the named place"
    );
}

#[test]
fn the_shift_probe_compares_each_shift_with_the_unshifted_noise_and_refuses_bad_shifts() {
    use adaptive_diffusion::train::shift_probe::{ShiftProbeSettings, shift_probe};
    let g = committed_model();
    let settings = ShiftProbeSettings {
        seeds: 1,
        shifts: vec![4, 8],
        steps: 3,
        guidance: 7.5,
        pyramid: 0.0,
    };
    let rows = shift_probe(&g, &settings).expect("the probe runs");
    assert_eq!(rows.iter().map(|r| r.shift).collect::<Vec<_>>(), [4, 8]);
    for r in &rows {
        assert!(r.seeds <= 1 && r.followed <= r.seeds, "{r:?}");
        assert!(r.error.is_finite() && r.moved.is_finite(), "{r:?}");
    }
    // Deterministic: the same noise canvas and prompts give the same places.
    let again = shift_probe(&g, &settings).expect("the probe runs");
    for (a, b) in rows.iter().zip(&again) {
        assert_eq!(
            (a.error, a.moved, a.followed),
            (b.error, b.moved, b.followed)
        );
    }
    for bad in [vec![], vec![0], vec![33]] {
        let e = shift_probe(
            &g,
            &ShiftProbeSettings {
                shifts: bad.clone(),
                ..settings.clone()
            },
        )
        .expect_err("bad shifts are refused");
        assert!(
            e.to_string().contains("give shifts in 1..=32"),
            "{bad:?}: {e}"
        );
    }
}

//! The committed built-in model (`assets/models/shapes`) loads through the shared pipeline
//! code and follows the prompt's background (the offset-noise fix: before it, every
//! background came out a washed-out grey that the checker rejects).

use std::path::Path;

use adaptive_diffusion::sampler::SchedulerKind;
use adaptive_diffusion::shapes::check;
use adaptive_diffusion::shapes::dataset::{eval_prompt, held_out_single};
use adaptive_diffusion::shapes::{Background, Scene};
use adaptive_diffusion::train::eval::Generator;

#[test]
fn the_built_in_model_draws_the_named_background() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes");
    let generator = Generator::load(&dir).expect("the committed model loads");
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

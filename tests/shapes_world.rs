//! The shapes world: renderer and caption determinism and coverage, and the checker on the
//! renderer's own images (right on ground truth, wrong on wrong prompts).

use std::collections::HashSet;

use adaptive_diffusion::shapes::check::{self, background_of, has_object};
use adaptive_diffusion::shapes::dataset::{
    StreamConfig, eval_prompt, graded_prompts, held_out_pairs, held_out_single, training_pair,
};
use adaptive_diffusion::shapes::vocab;
use adaptive_diffusion::shapes::{
    Background, Color, Position, Rng, Scene, Shape, Size, full_caption, render,
};

#[test]
fn the_stream_is_deterministic_and_covers_the_world() {
    let cfg = StreamConfig::default();
    let (mut a, mut b) = (Rng::new(5), Rng::new(5));
    let mut seen_words = HashSet::new();
    let mut counts = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    let mut empty = 0;
    let mut objects = [0usize; 4];
    for _ in 0..5000 {
        let (sa, ta) = training_pair(&mut a, &cfg);
        let (sb, tb) = training_pair(&mut b, &cfg);
        assert_eq!((&sa, &ta), (&sb, &tb));
        assert_eq!(render(&sa), render(&sb));
        empty += ta.is_empty() as usize;
        objects[sa.objects.len()] += 1;
        for w in ta.split_whitespace() {
            seen_words.insert(w.to_string());
        }
        for o in &sa.objects {
            counts.0.insert(o.shape);
            counts.1.insert(o.color);
            counts.2.insert(o.size);
            counts.3.insert(o.position);
        }
        counts.4.insert(sa.background);
        let mut pos: Vec<_> = sa.objects.iter().map(|o| o.position).collect();
        pos.sort();
        pos.dedup();
        assert_eq!(pos.len(), sa.objects.len(), "one object per position");
    }
    assert_eq!(counts.0.len(), Shape::ALL.len());
    assert_eq!(counts.1.len(), Color::ALL.len());
    assert_eq!(counts.2.len(), Size::ALL.len());
    assert_eq!(counts.3.len(), Position::ALL.len());
    assert_eq!(counts.4.len(), Background::ALL.len());
    assert!(
        (300..700).contains(&empty),
        "{empty} empty captions of 5000"
    );
    assert!(objects[1] > 0 && objects[2] > 0 && objects[3] > 0);
    // Every vocabulary word shows up, and captions use nothing else.
    let vocab: HashSet<String> = vocab::words().into_iter().collect();
    assert_eq!(seen_words, vocab);
}

#[test]
fn captions_fit_the_text_encoder_and_prompts_are_graded() {
    let mut rng = Rng::new(1);
    for _ in 0..200 {
        let s = Scene::random(&mut rng, 3);
        assert!(full_caption(&s).split_whitespace().count() + 2 <= vocab::MAX_LEN);
    }
    let g = graded_prompts(100, 4);
    assert_eq!(g.len(), 100);
    for l in 1..=5u8 {
        assert_eq!(g.iter().filter(|p| p.level == l).count(), 20);
    }
    let words = |l: u8| {
        g.iter()
            .filter(|p| p.level == l)
            .map(|p| p.prompt.split_whitespace().count())
            .sum::<usize>()
    };
    assert!(words(1) < words(2) && words(2) < words(4) && words(4) < words(5));
    assert_eq!(graded_prompts(100, 4), g);
}

#[test]
fn the_checker_passes_ground_truth_and_fails_wrong_prompts() {
    let mut scenes = held_out_single();
    scenes.extend(held_out_pairs(40, 2));
    let mut rng = Rng::new(9);
    for n in 1..=3 {
        for _ in 0..100 {
            scenes.push(Scene::random(&mut rng, n));
        }
    }
    let mut wrong_tested = 0;
    for s in &scenes {
        let img = render(s);
        let v = check::check(&img, s);
        assert!(v.all(), "{} → {v:?}", full_caption(s));
        assert_eq!(v.extra_objects, 0, "{} → {v:?}", full_caption(s));
        // Checked against a prompt that names only the first object, the others are extra.
        let first_only = Scene {
            objects: vec![s.objects[0]],
            background: s.background,
        };
        let v1 = check::check(&img, &first_only);
        assert!(v1.all());
        assert_eq!(v1.extra_objects, s.objects.len() - 1, "{}", full_caption(s));
        // Wrong background.
        let other_bg = *Background::ALL
            .iter()
            .find(|&&b| b != s.background)
            .unwrap();
        assert_ne!(background_of(&img), Some(other_bg));
        // Wrong colour at the first object's position.
        let o = s.objects[0];
        for &c in Color::ALL.iter().filter(|&&c| c != o.color) {
            assert!(
                !has_object(&img, c, o.position),
                "{} has {c} at {:?}",
                full_caption(s),
                o.position
            );
            wrong_tested += 1;
        }
        // Right colour at an empty position.
        for &p in Position::ALL {
            if s.objects.iter().all(|x| x.position != p) {
                assert!(
                    !has_object(&img, o.color, p),
                    "{} has {} at empty {:?}",
                    full_caption(s),
                    o.color,
                    p
                );
            }
        }
    }
    assert!(wrong_tested > 1000);
    // Held-out prompts are in evaluation form.
    assert!(eval_prompt(&held_out_single()[0]).ends_with("background"));
}

/// `assets/prompts/shapes-graded.txt` (the adaptive-vs-baseline prompt set for the shapes
/// model) is exactly what the generator writes. Regenerate with
/// `UPDATE_SHAPES_PROMPTS=1 cargo test --test shapes_world`.
#[test]
fn the_committed_shapes_prompt_set_matches_the_generator() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/prompts/shapes-graded.txt"
    );
    let mut text = String::from(
        "# 100 graded prompts of the built-in \"shapes\" world (`--model shapes`), written by\n\
         # adaptive_diffusion::shapes::dataset::graded_prompts(100, 2026); tests/shapes_world.rs\n\
         # checks this file. Format: GRADE<TAB>PROMPT. Grades: 1 = one object, colour + shape;\n\
         # 2 = one object, every attribute + background; 3 = two objects, colour + shape +\n\
         # position; 4 = two objects, everything; 5 = three objects, everything.\n",
    );
    for p in graded_prompts(100, 2026) {
        text.push_str(&format!("{}\t{}\n", p.level, p.prompt));
    }
    if std::env::var_os("UPDATE_SHAPES_PROMPTS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(path).unwrap(), text);
}

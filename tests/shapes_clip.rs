//! The committed tiny CLIP of the shapes world (`assets/models/shapes-clip`) loads through
//! the CLIP-alignment metric and ranks held-out renders' true captions first among 32.

use std::path::Path;

use adaptive_diffusion::metrics::clip::ClipScorer;
use adaptive_diffusion::train::clip::rank_accuracy;
use candle_core::Device;

#[test]
fn the_committed_tiny_clip_ranks_held_out_captions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes-clip");
    let scorer = ClipScorer::from_dir(&dir, &Device::Cpu).expect("the committed CLIP loads");
    let scores = rank_accuracy(&scorer, 30, 20, 32, 1).unwrap();
    let (top1, renders) = scores
        .iter()
        .fold((0, 0), |(a, b), s| (a + s.top1, b + s.renders));
    assert_eq!(renders, 50);
    // The bar is 80 %; chance is 1 / 32.
    assert!(
        top1 as f64 / renders as f64 >= 0.8,
        "true caption first for only {top1} / {renders}"
    );
}

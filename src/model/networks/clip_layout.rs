//! A clip's two layouts: `(batch, channels, frames, h, w)` as diffusers' pipelines hold
//! latents, and `(batch·frames, channels, h, w)` — each clip's frames consecutive — as the
//! 2-D layers of video UNets run them.

use candle_core::{Result, Tensor};

/// `(b, c, f, h, w)` → `(b·f, c, h, w)`.
pub fn to_frames(clip: &Tensor) -> Result<Tensor> {
    let (b, c, f, h, w) = clip.dims5()?;
    clip.permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((b * f, c, h, w))
}

/// `(b·frames, c, h, w)` → `(b, c, frames, h, w)`.
pub fn to_clip(x: &Tensor, frames: usize) -> Result<Tensor> {
    let (bf, c, h, w) = x.dims4()?;
    x.reshape((bf / frames, frames, c, h, w))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// `(b, …)` → `(b·frames, …)`, each sample repeated for its frames (`repeat_interleave`).
pub fn per_frame(t: &Tensor, frames: usize) -> Result<Tensor> {
    let dims = t.dims();
    let mut expanded = vec![dims[0], frames];
    expanded.extend(&dims[1..]);
    let mut flat = vec![dims[0] * frames];
    flat.extend(&dims[1..]);
    t.unsqueeze(1)?
        .broadcast_as(expanded)?
        .contiguous()?
        .reshape(flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layouts_round_trip_and_frames_stay_with_their_clip() {
        let clip = Tensor::arange(0f32, 2. * 3. * 4. * 2. * 2., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4, 2, 2))
            .unwrap();
        let frames = to_frames(&clip).unwrap();
        assert_eq!(frames.dims(), &[8, 3, 2, 2]);
        // Row 5 is clip 1, frame 1.
        let want = clip.narrow(0, 1, 1).unwrap().narrow(2, 1, 1).unwrap();
        let got = frames.narrow(0, 5, 1).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let back = to_clip(&frames, 4).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            clip.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let ctx = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        assert_eq!(
            per_frame(&ctx, 3).unwrap().to_vec2::<f32>().unwrap(),
            vec![
                vec![1., 2.],
                vec![1., 2.],
                vec![1., 2.],
                vec![3., 4.],
                vec![3., 4.],
                vec![3., 4.]
            ]
        );
    }
}

//! Multiply-accumulates of a UNet call, counted from the layer shapes: the cost that
//! compares methods making partial calls (cached blocks, dropped branches) with those that
//! skip whole calls. Convolutions, linear layers and the two attention products (QKᵀ and
//! the weighted sum of V) count; normalisations, activations and additions (a few percent)
//! do not. For SD 1.5 at 512×512, batch 1, the layers alone give 339 G — the figure
//! DeepCache's paper reports (its profiler counts layers, not the attention products) — and
//! the attention products add 62 G more.

use crate::model::config::{UNetBlock, UNetConfig};
use crate::sampler::{CallPlan, UNetPart};

/// A 3×3 (`k = 9`) or 1×1 (`k = 1`) convolution producing `hw` pixels.
fn conv(hw: u64, cin: usize, cout: usize, k: u64) -> u64 {
    hw * k * (cin * cout) as u64
}

/// A resnet from `cin` to `cout` channels at `hw` pixels (two 3×3 convs, a 1×1 shortcut when
/// the widths differ, the time-embedding projection).
fn resnet(hw: u64, cin: usize, cout: usize, temb: usize) -> u64 {
    let shortcut = if cin == cout {
        0
    } else {
        conv(hw, cin, cout, 1)
    };
    conv(hw, cin, cout, 9) + conv(hw, cout, cout, 9) + shortcut + (temb * cout) as u64
}

/// A `Transformer2D` of `depth` layers on `c` channels at `n` tokens, cross-attending to
/// `ctx_len` tokens of width `ctx_dim`: projections, the attention layers `k` computes
/// (with their QKᵀ and weighted-sum products when counted), the GEGLU feed-forward.
fn transformer(n: u64, c: usize, depth: usize, ctx_dim: usize, k: Count) -> u64 {
    let c = c as u64;
    let (ctx_dim, ctx_len) = (ctx_dim as u64, k.ctx_len as u64);
    let products = u64::from(k.products);
    let proj = 2 * n * c * c;
    let self_attn = 4 * n * c * c + products * 2 * n * n * c;
    let cross_attn = 2 * n * c * c + 2 * ctx_len * ctx_dim * c + products * 2 * n * ctx_len * c;
    let ff = 12 * n * c * c;
    let layer = u64::from(k.self_attn) * self_attn + u64::from(k.cross_attn) * cross_attn + ff;
    proj + depth as u64 * layer
}

/// What the count includes.
#[derive(Debug, Clone, Copy)]
struct Count {
    /// The batch.
    batch: usize,
    /// Context tokens.
    ctx_len: usize,
    /// Include the attention products (off only to compare with layer-only profilers).
    products: bool,
    /// Self-attention computes (T-GATE reuses it on some steps).
    self_attn: bool,
    /// Cross-attention computes (T-GATE reuses it past the gate).
    cross_attn: bool,
}

/// The resnets (and transformers) of one block at `hw` pixels; `cin_of(j)` gives resnet
/// `j`'s input width.
fn block_layers(
    hw: u64,
    block: &UNetBlock,
    temb: usize,
    k: Count,
    cin_of: impl Fn(usize) -> usize,
    skipped: impl Fn(usize) -> bool,
) -> u64 {
    (0..block.layers)
        .filter(|&j| !skipped(j))
        .map(|j| {
            let attn = block.cross_attn.map_or(0, |depth| {
                transformer(hw, block.out_channels, depth, block.cross_attention_dim, k)
            });
            resnet(hw, cin_of(j), block.out_channels, temb) + attn
        })
        .sum()
}

/// Multiply-accumulates of one UNet call on a `(batch, c, h, w)` latent with encoder states
/// of `ctx_len` tokens.
pub fn unet_call_macs(cfg: &UNetConfig, batch: usize, h: usize, w: usize, ctx_len: usize) -> u64 {
    unet_call_macs_planned(cfg, batch, h, w, ctx_len, None)
}

/// As [`unet_call_macs`], for a partial call: the modules DeepCache takes from its cache
/// and the attention layers T-GATE reuses cost nothing (`batch` is the call's own: one past
/// T-GATE's gate).
pub fn unet_call_macs_planned(
    cfg: &UNetConfig,
    batch: usize,
    h: usize,
    w: usize,
    ctx_len: usize,
    plan: Option<&CallPlan>,
) -> u64 {
    let (self_attn, cross_attn) = match plan {
        Some(CallPlan::TGate(t)) => (!t.self_attn.reuse, !t.cross.reuse),
        _ => (true, true),
    };
    let k = Count {
        batch,
        ctx_len,
        products: true,
        self_attn,
        cross_attn,
    };
    let deep = match plan {
        Some(CallPlan::DeepCache(p)) => Some(*p),
        _ => None,
    };
    let skip = |part, block, layer| deep.is_some_and(|p| p.skips(part, block, layer));
    count(cfg, h, w, k, &skip)
}

fn count(
    cfg: &UNetConfig,
    h: usize,
    w: usize,
    k: Count,
    skip: &dyn Fn(UNetPart, usize, usize) -> bool,
) -> u64 {
    let temb = cfg.time_embed_dim;
    let c0 = cfg.down[0].out_channels;
    let n = cfg.down.len();
    let mut hw = (h * w) as u64;
    let mut total = conv(hw, cfg.in_channels, c0, 9) + (c0 * temb + temb * temb) as u64;
    // Down path: the resolution halves after every block but the last.
    let mut cin = c0;
    for (i, block) in cfg.down.iter().enumerate() {
        let whole = skip(UNetPart::Down, i, 0);
        if !whole {
            total += block_layers(
                hw,
                block,
                temb,
                k,
                |j| if j == 0 { cin } else { block.out_channels },
                |j| skip(UNetPart::Down, i, j),
            );
        }
        if i + 1 < n {
            hw /= 4;
            if !whole && !skip(UNetPart::Down, i, block.layers) {
                total += conv(hw, block.out_channels, block.out_channels, 9);
            }
        }
        cin = block.out_channels;
    }
    // Mid block: resnet, transformer, resnet at the lowest resolution.
    let mid = &cfg.mid;
    if !skip(UNetPart::Mid, 0, 0) {
        total += 2 * resnet(hw, cin, mid.out_channels, temb)
            + mid.cross_attn.map_or(0, |d| {
                transformer(hw, mid.out_channels, d, mid.cross_attention_dim, k)
            });
    }
    // Up path: each resnet also takes a skip connection; the resolution doubles after
    // every block but the last.
    let reversed: Vec<usize> = cfg.down.iter().rev().map(|b| b.out_channels).collect();
    let mut prev = reversed[0];
    for (i, block) in cfg.up.iter().enumerate() {
        let skip_in = reversed[(i + 1).min(n - 1)];
        let cout = block.out_channels;
        let last = block.layers - 1;
        let b_rev = n - 1 - i;
        let whole = skip(UNetPart::Up, b_rev, 0);
        if !whole {
            total += block_layers(
                hw,
                block,
                temb,
                k,
                |j| (if j == 0 { prev } else { cout }) + if j == last { skip_in } else { cout },
                |j| skip(UNetPart::Up, b_rev, last - j),
            );
        }
        if i + 1 < n {
            hw *= 4;
            if !whole && !skip(UNetPart::Up, b_rev, 0) {
                total += conv(hw, cout, cout, 9);
            }
        }
        prev = cout;
    }
    total += conv(hw, c0, cfg.out_channels, 9);
    total * k.batch as u64
}

/// Where a video UNet's temporal layers sit (their 2-D layers are the image UNet's, run on
/// every frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TemporalLayers {
    /// ModelScope's `UNet3DConditionModel`: a temporal convolution after each ResNet, a
    /// temporal transformer after each spatial one, and `transformer_in` (8 heads of this
    /// width) after `conv_in`.
    ModelScope {
        /// Head width of `transformer_in`.
        transformer_in_head_dim: usize,
    },
    /// AnimateDiff: a motion module after each down layer and each up layer, and one in the
    /// mid block when `mid`.
    Motion {
        /// Whether the mid block has a module.
        mid: bool,
    },
}

/// A temporal transformer (or motion module) on `c` channels at `hw` pixels, each pixel's
/// `frames` as a sequence: projections to and from `inner`, two self-attentions over the
/// frames (with their products), the GEGLU feed-forward.
fn temporal_transformer(hw: u64, frames: u64, c: usize, inner: usize) -> u64 {
    let (c, i) = (c as u64, inner as u64);
    let n = hw * frames;
    let proj = 2 * n * c * i;
    let attn = 4 * n * i * i + 2 * hw * frames * frames * i;
    proj + 2 * attn + 12 * n * i * i
}

/// ModelScope's temporal convolution: four Conv3d (3, 1, 1) of `c` channels.
fn temporal_conv(hw: u64, frames: u64, c: usize) -> u64 {
    4 * hw * frames * 3 * (c * c) as u64
}

/// Multiply-accumulates of one video UNet call on `(batch, c, frames, h, w)` latents: the
/// 2-D layers on every frame (as [`unet_call_macs_planned`] counts them) and the temporal
/// layers; a partial call (DeepCache on AnimateDiff) skips the motion modules of the layers
/// it takes from its cache.
#[allow(clippy::too_many_arguments)]
pub fn video_call_macs(
    cfg: &UNetConfig,
    temporal: TemporalLayers,
    batch: usize,
    frames: usize,
    h: usize,
    w: usize,
    ctx_len: usize,
    plan: Option<&CallPlan>,
) -> u64 {
    let spatial = unet_call_macs_planned(cfg, batch * frames, h, w, ctx_len, plan);
    let deep = match plan {
        Some(CallPlan::DeepCache(p)) => Some(*p),
        _ => None,
    };
    let skip = |part, block, layer| deep.is_some_and(|p| p.skips(part, block, layer));
    let f = frames as u64;
    let n = cfg.down.len();
    // Pixels at down block i (the resolution halves after every block but the last).
    let hw_at = |i: usize| (h * w) as u64 >> (2 * i.min(n - 1));
    let mut t = 0u64;
    for (i, block) in cfg.down.iter().enumerate() {
        let (hw, c) = (hw_at(i), block.out_channels);
        let layers = (0..block.layers)
            .filter(|&j| !skip(UNetPart::Down, i, j))
            .count() as u64;
        t += layers
            * match temporal {
                TemporalLayers::ModelScope { .. } => {
                    temporal_conv(hw, f, c)
                        + block
                            .cross_attn
                            .map_or(0, |_| temporal_transformer(hw, f, c, c))
                }
                TemporalLayers::Motion { .. } => temporal_transformer(hw, f, c, c),
            };
    }
    let (hw_low, c_low) = (hw_at(n - 1), cfg.mid.out_channels);
    t += match temporal {
        TemporalLayers::ModelScope {
            transformer_in_head_dim,
        } => {
            let c0 = cfg.down[0].out_channels;
            temporal_transformer(hw_at(0), f, c0, 8 * transformer_in_head_dim)
                + u64::from(!skip(UNetPart::Mid, 0, 0))
                    * (2 * temporal_conv(hw_low, f, c_low)
                        + temporal_transformer(hw_low, f, c_low, c_low))
        }
        TemporalLayers::Motion { mid } => {
            u64::from(mid && !skip(UNetPart::Mid, 0, 0))
                * temporal_transformer(hw_low, f, c_low, c_low)
        }
    };
    for (i, block) in cfg.up.iter().enumerate() {
        let (hw, c) = (hw_at(n - 1 - i), block.out_channels);
        let last = block.layers - 1;
        let layers = (0..block.layers)
            .filter(|&j| !skip(UNetPart::Up, n - 1 - i, last - j))
            .count() as u64;
        t += layers
            * match temporal {
                TemporalLayers::ModelScope { .. } => {
                    temporal_conv(hw, f, c)
                        + block
                            .cross_attn
                            .map_or(0, |_| temporal_transformer(hw, f, c, c))
                }
                TemporalLayers::Motion { .. } => temporal_transformer(hw, f, c, c),
            };
    }
    spatial + t * batch as u64
}

/// The unit of `unet_cost`: one classifier-free-guidance call (batch 2) of Stable
/// Diffusion 1.5 at 512×512 (a 64×64 latent, 77 text tokens).
pub fn reference_call_macs() -> u64 {
    unet_call_macs(&sd15(), 2, 64, 64, 77)
}

fn sd15() -> UNetConfig {
    let json: crate::model::config::UNetJson =
        serde_json::from_str(crate::model::config::SD15_UNET_CONFIG)
            .expect("the built-in SD 1.5 config parses");
    UNetConfig::from_json(&json, std::path::Path::new("<SD 1.5>"))
        .expect("the built-in SD 1.5 config resolves")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::DeepCachePlan;

    #[test]
    fn sd15_at_512_is_the_published_339_gmacs_plus_the_attention_products() {
        let all = reference_call_macs() / 2;
        let k = Count {
            batch: 1,
            ctx_len: 77,
            products: false,
            self_attn: true,
            cross_attn: true,
        };
        let layers = count(&sd15(), 64, 64, k, &|_, _, _| false);
        let g = layers as f64 / 1e9;
        assert!((g - 339.23).abs() / 339.23 < 0.005, "layers: {g:.2} GMACs");
        let products = (all - layers) as f64 / 1e9;
        assert!(
            (60.0..64.0).contains(&products),
            "attention products: {products:.2} G"
        );
    }

    #[test]
    fn a_video_call_is_its_frames_plus_the_temporal_layers() {
        let cfg = sd15();
        let image = unet_call_macs(&cfg, 2, 32, 32, 77);
        let motion = video_call_macs(
            &cfg,
            TemporalLayers::Motion { mid: true },
            2,
            16,
            32,
            32,
            77,
            None,
        );
        // AnimateDiff v2 on SD 1.5 at 256², 16 frames: sixteen image calls plus the 21
        // motion modules, which are a modest share (their attention runs over 16 tokens).
        let extra = motion as f64 / (16 * image) as f64 - 1.0;
        assert!((0.02..0.5).contains(&extra), "{extra}");
        // More frames cost more than proportionally only through the frame attention.
        let m32 = video_call_macs(
            &cfg,
            TemporalLayers::Motion { mid: true },
            2,
            32,
            32,
            32,
            77,
            None,
        );
        assert!(m32 > 2 * motion);
        let ms = video_call_macs(
            &cfg,
            TemporalLayers::ModelScope {
                transformer_in_head_dim: 64,
            },
            2,
            16,
            32,
            32,
            77,
            None,
        );
        assert!(
            ms > motion,
            "temporal convs and transformers on top of the same 2-D layers"
        );
        // DeepCache on AnimateDiff: a partial call skips the cached layers' motion modules.
        let plan = CallPlan::DeepCache(DeepCachePlan::for_step(1, 3, 0));
        let partial = video_call_macs(
            &cfg,
            TemporalLayers::Motion { mid: true },
            2,
            16,
            32,
            32,
            77,
            Some(&plan),
        );
        let spatial = unet_call_macs_planned(&cfg, 32, 32, 32, 77, Some(&plan));
        assert!(
            partial > spatial && partial < motion / 5,
            "{partial} of {motion}"
        );
    }

    #[test]
    fn a_deepcache_call_costs_only_its_shallow_branch() {
        let full = reference_call_macs();
        let cost = |step, branch| {
            let plan = CallPlan::DeepCache(DeepCachePlan::for_step(step, 3, branch));
            unet_call_macs_planned(&sd15(), 2, 64, 64, 77, Some(&plan))
        };
        assert_eq!(cost(0, 0), full, "a full step");
        // Branch 0 computes conv_in, the last up block's last layer and conv_out: a few
        // percent of a call; deeper branches compute more.
        let b0 = cost(1, 0) as f64 / full as f64;
        assert!(b0 > 0.0 && b0 < 0.15, "{b0}");
        assert!(cost(1, 0) < cost(1, 2) && cost(1, 2) < cost(1, 5) && cost(1, 5) < full);
    }
}

//! The robustness suite: bad inputs and faults across `generate`, `compare`, `bench`,
//! `complexity` and `overhead`. Every case asserts the exit code, that the one error line
//! names the problem, that nothing panicked, and that no output or temporary file was left
//! behind or replaced. The special cases (symlinks, FIFOs, a full device, secrets in URLs,
//! an HTML-speaking "Ollama") follow the table.
//!
//! Runs on the tiny random pipeline `tests/fixtures/tiny-sd`; most cases fail before a model
//! is loaded, the others load the tiny one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd")
}

fn adiff_in(dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("ADIFF_LOG")
        .output()
        .expect("run adiff")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file below `dir` with its size and content hash (a changed file shows).
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                out.insert(p, (m.len(), hash));
            } else {
                out.insert(p, (0, 0));
            }
        }
    }
    out
}

/// The files a case starts with, in its own folder.
#[derive(Clone, Copy)]
enum Setup {
    None,
    /// `old.png` (an existing output that must survive).
    OldPng,
    /// `lat.safetensors` with a tensor `latents` of this kind.
    Latents(Lat),
    /// `not.safetensors`: text, not a safetensors file.
    NotSafetensors,
    /// `prompts.txt` with two prompts, and a file `afile`.
    Prompts,
    /// `tiny/`: a copy of the pipeline with a truncated UNet file.
    TruncatedUnet,
    /// `link.json` → `old.png`.
    LinkToOld,
    /// `map.json`: a budget map whose steps decrease.
    BadMap,
    /// `model.ckpt` (a pickle), `model.safetensors` (a single-file SD 1.x inpainting
    /// checkpoint), `lora.safetensors` (a LoRA), `cut.safetensors` (a truncated checkpoint),
    /// `badrank.safetensors` (a LoRA whose matrices do not fit the tiny SD 1.x file),
    /// `halfloha.safetensors` (a LoHa module with half its factors), `stray.safetensors` (a
    /// LoRA naming a module no model has) and `vae8.safetensors`
    /// (a VAE making 8-channel latents).
    Checkpoints,
    /// `tiny/`: a copy of the pipeline whose `file` has one NaN in `tensor`, and
    /// `prompts.txt`.
    Poison(&'static str, &'static str),
    /// Untrusted files: `overlap.safetensors`, `samebytes.safetensors` and
    /// `dupname.safetensors` (corrupt headers), `nanlora.safetensors` (a LoRA with a NaN),
    /// `lora.safetensors` (an ordinary file named like a LoRA), `lat.safetensors`,
    /// `fifo` (a named pipe), `loop` (a symlink to itself), `graded.txt` (a bad grade) and
    /// `huge.txt` (a 1 MB prompt line).
    Untrusted,
}

/// The tensor files of [`Setup::Poison`].
const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const TEXT: &str = "text_encoder/model.safetensors";

/// A safetensors file with a header written by hand over `data_len` zero bytes.
fn raw_safetensors(path: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

#[derive(Clone, Copy)]
enum Lat {
    Nan,
    Inf,
    Huge,
    F16,
    F64,
    Rank3,
    Named,
}

fn setup(dir: &Path, s: Setup) {
    use candle_core::{DType, Device, Tensor};
    let save = |name: &str, t: Tensor| {
        let map = std::collections::HashMap::from([(name.to_string(), t)]);
        candle_core::safetensors::save(&map, dir.join("lat.safetensors")).unwrap();
    };
    let lat = |v: f32| Tensor::full(v, (1, 4, 8, 8), &Device::Cpu).unwrap();
    match s {
        Setup::None => {}
        Setup::OldPng => std::fs::write(dir.join("old.png"), b"old bytes").unwrap(),
        Setup::Latents(kind) => match kind {
            Lat::Nan => save("latents", lat(f32::NAN)),
            Lat::Inf => save("latents", lat(f32::INFINITY)),
            Lat::Huge => save("latents", lat(1e30)),
            Lat::F16 => save("latents", lat(0.5).to_dtype(DType::F16).unwrap()),
            Lat::F64 => save("latents", lat(0.5).to_dtype(DType::F64).unwrap()),
            Lat::Rank3 => save(
                "latents",
                Tensor::zeros((4, 8, 8), DType::F32, &Device::Cpu).unwrap(),
            ),
            Lat::Named => save("noise", lat(0.5)),
        },
        Setup::NotSafetensors => std::fs::write(dir.join("not.safetensors"), b"hello").unwrap(),
        Setup::Prompts => {
            std::fs::write(dir.join("prompts.txt"), "a red circle\na blue square\n").unwrap();
            std::fs::write(dir.join("afile"), b"x").unwrap();
        }
        Setup::TruncatedUnet => {
            let copy = dir.join("tiny");
            copy_dir(&fixture(), &copy);
            let unet = copy.join("unet/diffusion_pytorch_model.safetensors");
            let bytes = std::fs::read(&unet).unwrap();
            std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
        }
        Setup::LinkToOld => {
            std::fs::write(dir.join("old.png"), b"old bytes").unwrap();
            std::os::unix::fs::symlink("old.png", dir.join("link.json")).unwrap();
        }
        Setup::Checkpoints => {
            std::fs::write(dir.join("model.ckpt"), b"\x80\x02pickle").unwrap();
            let small = |c: usize| Tensor::zeros((c, 2), DType::F16, &Device::Cpu).unwrap();
            let write = |file: &str, names: &[&str]| {
                let map: std::collections::HashMap<String, Tensor> =
                    names.iter().map(|n| (n.to_string(), small(4))).collect();
                candle_core::safetensors::save(&map, dir.join(file)).unwrap();
            };
            let save = |file: &str, tensors: &[(&str, &[usize])]| {
                let map: std::collections::HashMap<String, Tensor> = tensors
                    .iter()
                    .map(|(n, s)| {
                        let t = Tensor::zeros(*s, DType::F32, &Device::Cpu).unwrap();
                        (n.to_string(), t)
                    })
                    .collect();
                candle_core::safetensors::save(&map, dir.join(file)).unwrap();
            };
            save(
                "model.safetensors",
                &[
                    ("model.diffusion_model.input_blocks.0.0.weight", &[4, 9, 1, 1]),
                    ("cond_stage_model.transformer.text_model.final_layer_norm.weight", &[4]),
                    ("first_stage_model.decoder.conv_out.weight", &[3, 4, 1, 1]),
                ],
            );
            let q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
            let (qd, qu) = (format!("{q}.lora_down.weight"), format!("{q}.lora_up.weight"));
            save("badrank.safetensors", &[(&qd, &[2, 7]), (&qu, &[32, 2])]);
            let (h1a, h1b) = (format!("{q}.hada_w1_a"), format!("{q}.hada_w1_b"));
            save("halfloha.safetensors", &[(&h1a, &[32, 2]), (&h1b, &[2, 32])]);
            save(
                "stray.safetensors",
                &[
                    ("lora_unet_no_such_block_proj.lora_down.weight", &[2, 32]),
                    ("lora_unet_no_such_block_proj.lora_up.weight", &[32, 2]),
                ],
            );
            save(
                "vae8.safetensors",
                &[
                    ("decoder.conv_in.weight", &[32, 8, 3, 3]),
                    ("decoder.conv_out.weight", &[3, 32, 3, 3]),
                    ("decoder.up_blocks.0.resnets.0.conv2.weight", &[32, 32, 3, 3]),
                    ("decoder.up_blocks.0.resnets.1.conv2.weight", &[32, 32, 3, 3]),
                    ("decoder.mid_block.attentions.0.to_q.weight", &[32, 32]),
                ],
            );
            save(
                "vae12.safetensors",
                &[
                    ("decoder.conv_in.weight", &[12, 4, 3, 3]),
                    ("decoder.conv_out.weight", &[3, 12, 3, 3]),
                    ("decoder.up_blocks.0.resnets.0.conv2.weight", &[12, 12, 3, 3]),
                    ("decoder.up_blocks.0.resnets.1.conv2.weight", &[12, 12, 3, 3]),
                    ("decoder.mid_block.attentions.0.to_q.weight", &[12, 12]),
                ],
            );
            write(
                "lora.safetensors",
                &["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"],
            );
            let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
            std::fs::write(dir.join("cut.safetensors"), &bytes[..bytes.len() - 8]).unwrap();
        }
        Setup::Poison(file, tensor) => {
            let copy = dir.join("tiny");
            copy_dir(&fixture(), &copy);
            let path = copy.join(file);
            let mut map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let t = &map[tensor];
            let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[0] = f32::NAN;
            let poisoned = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            map.insert(tensor.to_string(), poisoned);
            candle_core::safetensors::save(&map, &path).unwrap();
            std::fs::write(dir.join("prompts.txt"), "a red circle\na blue square\n").unwrap();
        }
        Setup::Untrusted => {
            let t = |name: &str, b: usize, e: usize| {
                format!(
                    r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{b},{e}]}}"#,
                    (e - b) / 4
                )
            };
            let two = |a: String, b: String| format!("{{{a},{b}}}");
            raw_safetensors(
                &dir.join("overlap.safetensors"),
                &two(t("a", 0, 16), t("b", 8, 24)),
                24,
            );
            raw_safetensors(
                &dir.join("samebytes.safetensors"),
                &two(t("a", 0, 16), t("b", 0, 16)),
                16,
            );
            raw_safetensors(
                &dir.join("dupname.safetensors"),
                &two(t("a", 0, 8), t("a", 8, 16)),
                16,
            );
            let q = "lora_unet_mid_block_attentions_0_proj_in";
            let down = Tensor::new(&[[f32::NAN, 0.0], [0.0, 0.0]], &Device::Cpu).unwrap();
            let up = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
            let map = std::collections::HashMap::from([
                (format!("{q}.lora_down.weight"), down),
                (format!("{q}.lora_up.weight"), up),
            ]);
            candle_core::safetensors::save(&map, dir.join("nanlora.safetensors")).unwrap();
            std::fs::write(dir.join("lora.safetensors"), b"lora bytes").unwrap();
            save("latents", lat(0.5));
            let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
            std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
            std::fs::write(dir.join("graded.txt"), "1\ta cat\n2.5\ta dog\n").unwrap();
            let huge = "a red circle ".repeat(80_000);
            std::fs::write(dir.join("huge.txt"), format!("{huge}\n")).unwrap();
        }
        Setup::BadMap => std::fs::write(
            dir.join("map.json"),
            r#"{"reference_steps":50,"min_steps":5,"max_steps":50,"levels":[{"min_score":0.0,"steps":30},{"min_score":0.5,"steps":20}]}"#,
        )
        .unwrap(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// One bad input: the command line (`{w}` is the tiny pipeline, `{d}` the case's folder),
/// the words the error must contain, and the exit code (2: an argument clap refused).
struct Case {
    args: &'static str,
    needle: &'static str,
    code: i32,
    setup: Setup,
}

const fn case(args: &'static str, needle: &'static str) -> Case {
    Case {
        args,
        needle,
        code: 1,
        setup: Setup::None,
    }
}

const fn usage(args: &'static str, needle: &'static str) -> Case {
    Case {
        args,
        needle,
        code: 2,
        setup: Setup::None,
    }
}

const fn with(args: &'static str, needle: &'static str, setup: Setup) -> Case {
    Case {
        args,
        needle,
        code: 1,
        setup,
    }
}

const G: &str = "generate --weights {w} --out {d}/out.png --prompt";

fn cases() -> Vec<Case> {
    let g = |rest: &str| format!("{G} {rest}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut v = vec![
        // prompts and text
        case(leak(g("''")), "--prompt is empty"),
        case(leak(g("'   '")), "--prompt is empty"),
        // numbers
        case(leak(g("a --steps 0")), "--steps must be at least 1"),
        usage(leak(g("a --steps -1")), "invalid value '-1' for '--steps"),
        usage(leak(g("a --steps abc")), "invalid value 'abc' for '--steps"),
        case(
            leak(g("a --steps 5000")),
            "--steps is not usable: 5000 steps exceed",
        ),
        case(
            leak(g("a --guidance 1e39")),
            "--guidance must be a number from 0 to 100",
        ),
        case(
            leak(g("a --guidance 1e30")),
            "--guidance must be a number from 0 to 100",
        ),
        case(leak(g("a --guidance -1")), "--guidance"),
        case(leak(g("a --guidance nan")), "--guidance"),
        case(leak(g("a --guidance inf")), "--guidance"),
        case(
            leak(g("a --delta -0.5")),
            "--delta must be within 0–10 (got -0.5)",
        ),
        case(leak(g("a --delta nan")), "--delta"),
        case(leak(g("a --delta 1e6")), "--delta must be within 0–10"),
        case(leak(g("a --max-skips 0")), "--max-skips must be at least 1"),
        usage(
            leak(g("a --max-skips -1")),
            "invalid value '-1' for '--max-skips",
        ),
        case(
            leak(g("a --early-stop --early-stop-tau 0")),
            "--early-stop-tau",
        ),
        case(
            leak(g("a --early-stop --early-stop-tau 2")),
            "--early-stop-tau must be below 1",
        ),
        usage(leak(g("a --early-stop-tau 0.1")), "--early-stop"),
        case(
            leak(g("a --width 100")),
            "--width 100 is not a positive multiple of 8 (try 96)",
        ),
        case(
            leak(g("a --width 0")),
            "--width 0 is not a positive multiple of 8",
        ),
        case(leak(g("a --height 7")), "--height 7 is not"),
        case(
            leak(g("a --width 100000")),
            "--width 100000 is larger than 8192",
        ),
        usage(leak(g("a --seed -5")), "invalid value '-5' for '--seed"),
        case(leak(g("a --scheduler pndm")), "unknown scheduler 'pndm'"),
        usage(
            leak(g("a --mode fast")),
            "[possible values: baseline, adaptive]",
        ),
        usage(
            leak(g("a --mode basline")),
            "a similar value exists: 'baseline'",
        ),
        case(
            leak(g("a --budget auto --mode baseline")),
            "--budget auto chooses",
        ),
        usage(
            leak(g("a --budget sometimes")),
            "[possible values: fixed, auto]",
        ),
        usage(leak(g("a --dtype f64")), "--dtype"),
        // models
        case(
            "generate --weights /nonexistent/weights --prompt a --out {d}/out.png",
            "/nonexistent/weights",
        ),
        case(
            "generate --model sd99 --prompt a --out {d}/out.png",
            "valid names: sd15, sd21, sdxl, sd-turbo, modelscope-t2v, shapes",
        ),
        usage(
            "generate --weights {w} --model shapes --prompt a --out {d}/out.png",
            "cannot be used with",
        ),
        with(
            "generate --weights {d}/tiny --prompt a --out {d}/out.png",
            "diffusion_pytorch_model.safetensors",
            Setup::TruncatedUnet,
        ),
        with(
            "generate --weights {d}/model.ckpt --prompt a --out {d}/out.png",
            "is a PyTorch pickle file; pickle files can run code when they are loaded",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w} --lora {d}/model.ckpt:0.5 --prompt a --out {d}/out.png",
            "model.ckpt is a PyTorch pickle file; pickle files can run code when they are loaded, so adiff never opens them: convert it to safetensors first, on a machine where you trust it (with PyTorch: safetensors.torch.save_file(torch.load(",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w} --lora {d}/missing.safetensors --prompt a --out {d}/out.png",
            "missing.safetensors: does not exist",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {d}/model.safetensors --prompt a --out {d}/out.png",
            "UNet input channels: 9: an inpainting checkpoint; inpainting is not supported yet",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w}/../single-file/tiny-sd1.safetensors --lora {d}/badrank.safetensors:0.5 --prompt a --out {d}/out.png",
            "badrank.safetensors: its modules do not fit this model (rank, shape or missing factors): down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q: its factors make a 32×7 update, not the model's [32, 32] weight",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w}/../single-file/tiny-sd1.safetensors --lora {d}/halfloha.safetensors --prompt a --out {d}/out.png",
            "halfloha.safetensors: its modules do not fit this model (rank, shape or missing factors): down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q is a LoHa without all four hada_w1_a/b, hada_w2_a/b",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w}/../single-file/tiny-sd1.safetensors --lora {d}/stray.safetensors --prompt a --out {d}/out.png",
            "1 of its keys or modules match nothing in this model (is it made for another model?): no_such_block_proj",
            Setup::Checkpoints,
        ),
        case(
            "generate --weights {w}/../single-file/tiny-sdxl.safetensors --lora {w}/../single-file/lora-sd1-kohya.safetensors --prompt a --out {d}/out.png",
            "lora-sd1-kohya.safetensors: it is made for SD 1.x / 2.x (one text encoder, lora_te_* keys) but the model is SDXL",
        ),
        with(
            "generate --weights {w}/../single-file/tiny-sd1.safetensors --vae {d}/vae8.safetensors --prompt a --out {d}/out.png",
            "vae8.safetensors does not fit this model as its VAE: it makes 8-channel latents but the UNet takes 4",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w} --vae {d}/vae8.safetensors --prompt a --out {d}/out.png",
            "vae8.safetensors does not fit this model as its VAE: it makes 8-channel latents but the model's UNet works on 4",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {w} --vae {d}/vae12.safetensors --prompt a --out {d}/out.png",
            "vae12.safetensors does not fit this model as its VAE: its blocks are [12",
            Setup::Checkpoints,
        ),
        case(
            "generate --model shapes --vae {w}/vae/diffusion_pytorch_model.safetensors --prompt a --out {d}/out.png",
            "works in pixel space and has no VAE to replace",
        ),
        with(
            "generate --weights {d}/afile --prompt a --out {d}/out.png",
            "missing model folder (this is a file): expected",
            Setup::Prompts,
        ),
        with(
            "generate --weights {d}/lora.safetensors --prompt a --out {d}/out.png",
            "is not a Stable Diffusion checkpoint adiff recognises",
            Setup::Checkpoints,
        ),
        with(
            "generate --weights {d}/cut.safetensors --prompt a --out {d}/out.png",
            "is truncated or corrupt",
            Setup::Checkpoints,
        ),
        // methods
        case(
            leak(g("a --method warp")),
            "--method 'warp': no method is called 'warp'",
        ),
        case(
            leak(g("a --method adaptive:interval=2")),
            "adaptive has no key 'interval' (keys: delta, max_skips)",
        ),
        case(leak(g("a --method steps:n=0")), "n must be at least 1"),
        case(leak(g("a --method steps")), "steps needs n=N"),
        case(
            leak(g("a --method ucache:start=0.9,end=0.5")),
            "start must be below end",
        ),
        case(
            leak(g("a --method deepcache:interval=0")),
            "interval must be at least 1",
        ),
        case(
            leak(g("a --method tgate:gate=0")),
            "gate_step must be at least 1 (got 0)",
        ),
        case(
            leak(g("a --method tgate:gate_steps=3")),
            "tgate has no key 'gate_steps' (keys: gate_step, sp_interval, fi_interval, warm_up)",
        ),
        case(
            leak(g("a --method deepcache:branch=6")),
            "branch 6 names block 2 but this UNet has 2 down blocks (branches 0–5)",
        ),
        usage(
            leak(g("a --method adaptive --delta 0.02")),
            "cannot be used with",
        ),
        usage(
            leak(g("a --method adaptive --mode baseline")),
            "cannot be used with",
        ),
        case(
            "compare --weights {w} --prompt a --left warp --out {d}/c.png",
            "--method 'warp'",
        ),
        // outputs
        case(
            "generate --weights {w} --prompt a --out /nonexistent-dir/x.png",
            "does not exist",
        ),
        case(
            "generate --weights {w} --prompt a --out {d}",
            "is a directory",
        ),
        case(
            "generate --weights {w} --prompt a --out {d}/x.png --trace {d}/x.png",
            "--out and --trace name the same file",
        ),
        case(
            "generate --weights {w} --prompt a --out {d}/x.png --latents-out {d}/x.png",
            "--out and --latents-out name the same file",
        ),
        with(
            "generate --weights {w} --prompt a --out {d}/old.png --trace {d}/link.json",
            "name the same file",
            Setup::LinkToOld,
        ),
        usage(
            "generate --weights {w} --prompt a --out ''",
            "a value is required for '--out <OUT>'",
        ),
        case(
            "generate --weights {w} --prompt a --out {d}/o.png --latents-out {d}",
            "is a directory",
        ),
        // initial latents
        case(
            leak(g("a --init-latents {d}/none.safetensors")),
            "--init-latents",
        ),
        with(
            leak(g("a --init-latents {d}/not.safetensors")),
            "cannot read --init-latents",
            Setup::NotSafetensors,
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "no tensor named 'latents' (found: noise)",
            Setup::Latents(Lat::Named),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "must be a (1, C, H, W) tensor",
            Setup::Latents(Lat::Rank3),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "is F16; give f32 latents",
            Setup::Latents(Lat::F16),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "is F64; give f32 latents",
            Setup::Latents(Lat::F64),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "not finite numbers",
            Setup::Latents(Lat::Nan),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "not finite numbers",
            Setup::Latents(Lat::Inf),
        ),
        with(
            leak(g("a --init-latents {d}/lat.safetensors")),
            "initial noise σ",
            Setup::Latents(Lat::Huge),
        ),
        // compare
        case(
            "compare --weights {w} --prompt a --steps 0 --out {d}/c.png",
            "--steps must be at least 1",
        ),
        case(
            "compare --weights {w} --prompt a --out {d}/c.png --trace {d}/c.png",
            "name the same file",
        ),
        case(
            "compare --weights {w} --prompt a --guidance 1e39 --out {d}/c.png",
            "--guidance",
        ),
        case(
            "compare --weights {w} --prompt a --width 8 --height 8192000 --out {d}/c.png",
            "--height 8192000 is larger than 8192",
        ),
        // complexity
        case("complexity ''", "prompt is empty"),
        case("complexity 'a red fox' --steps 0", "--steps"),
        case(
            "complexity 'a red fox' --scorer ollama --ollama-url ftp://host:1",
            "--ollama-url 'ftp://host:1' must start with http://",
        ),
        case(
            "complexity 'a red fox' --scorer ollama --ollama-timeout 0",
            "--ollama-timeout",
        ),
        case(
            "complexity 'a red fox' --budget-map {d}/none.json",
            "cannot read --budget-map",
        ),
        with(
            "complexity 'a red fox' --budget-map {d}/map.json",
            "steps must not decrease",
            Setup::BadMap,
        ),
        usage(
            "complexity 'a red fox' --scorer gpt",
            "[possible values: ollama, heuristic]",
        ),
        // bench
        case(
            "bench --weights {w} --prompts {d}/none.txt --out {d}/b",
            "cannot read --prompts",
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --schedulers pndm --out {d}/b",
            "unknown scheduler 'pndm'",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --out {d}/afile",
            "is a file",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --steps 0 --out {d}/b",
            "--steps must be at least 1",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --deltas -1 --out {d}/b",
            "--delta",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --guidance 1e39 --out {d}/b",
            "--guidance",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --method ucache:threshold=0/1 --out {d}/b",
            "threshold must be a positive number",
            Setup::Prompts,
        ),
        with(
            "bench --weights {w} --prompts {d}/prompts.txt --limit 0 --out {d}/b",
            "--limit must be at least 1",
            Setup::Prompts,
        ),
        usage(
            "bench --weights {w} --prompts {d}/prompts.txt --early-stop-tau 0.1 --out {d}/b",
            "--early-stop",
        ),
        // overhead
        case("overhead --iters 0", "--iters must be at least 1"),
        case("overhead --calls 0", "--calls must be at least 1"),
        case(
            "overhead --size 100",
            "--size must be a positive multiple of 64",
        ),
        case("overhead --json /nonexistent-dir/o.json", "does not exist"),
        // arguments
        usage("generate", "--prompt <PROMPT>"),
        usage("generate --prompt a", "--out <OUT>"),
        usage("frobnicate", "unrecognized subcommand 'frobnicate'"),
    ];
    // Untrusted files (issue: downloaded files are untrusted input).
    let tiny = "generate --weights {d}/tiny --out {d}/out.png --prompt a --steps 2";
    for (file, tensor) in [
        (VAE, "decoder.conv_in.weight"),
        (VAE, "decoder.conv_out.bias"),
        (VAE, "post_quant_conv.weight"),
        (VAE, "decoder.mid_block.attentions.0.to_k.weight"),
        (
            UNET,
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight",
        ),
        (TEXT, "text_model.encoder.layers.0.self_attn.k_proj.weight"),
    ] {
        let needle = leak(format!("{file}: tensor '{tensor}' holds 1 of"));
        v.push(with(tiny, needle, Setup::Poison(file, tensor)));
    }
    v.push(with(
        "generate --weights {w} --vae {d}/tiny/vae/diffusion_pytorch_model.safetensors --out {d}/out.png --prompt a --steps 2",
        "tensor 'decoder.conv_in.weight' holds 1 of",
        Setup::Poison(VAE, "decoder.conv_in.weight"),
    ));
    v.push(with(
        "bench --weights {d}/tiny --prompts {d}/prompts.txt --steps 2 --no-clip --out {d}/b",
        "tensor 'conv_in.weight' holds 1 of",
        Setup::Poison(UNET, "conv_in.weight"),
    ));
    let u = |args: &'static str, needle: &'static str| with(args, needle, Setup::Untrusted);
    let mut untrusted = vec![
        u(
            "generate --weights {d}/overlap.safetensors --out {d}/o.png --prompt a",
            "tensor 'b': invalid data_offsets, its bytes 8..24 overlap those of tensor 'a'",
        ),
        u(
            "generate --weights {d}/samebytes.safetensors --out {d}/o.png --prompt a",
            "overlap those of tensor 'a'",
        ),
        u(
            "generate --weights {d}/dupname.safetensors --out {d}/o.png --prompt a",
            "the header names tensor 'a' twice",
        ),
        u(
            leak(g("a --lora {d}/nanlora.safetensors")),
            "tensor 'lora_unet_mid_block_attentions_0_proj_in.lora_down.weight' holds 1 of 4 values that are not finite",
        ),
        u(
            leak(g(
                "a --lora {d}/lora.safetensors --latents-out {d}/lora.safetensors",
            )),
            "would replace a LoRA",
        ),
        u(
            leak(g(
                "a --init-latents {d}/lat.safetensors --latents-out {d}/lat.safetensors",
            )),
            "would replace the initial latents",
        ),
        u(
            "generate --weights {d}/tiny --prompt a --out {d}/tiny/unet/diffusion_pytorch_model.safetensors",
            "cannot write .safetensors images",
        ),
        u(
            "generate --weights {d} --prompt a --out {d}/o.png --trace {d}/graded.txt",
            "--trace {d}/graded.txt would replace the model {d}",
        ),
        u(
            leak(format!("{G} a").replace("out.png", "out.bmp")),
            "cannot write .bmp images",
        ),
        u(
            "generate --weights {d}/fifo --out {d}/o.png --prompt a",
            "is a named pipe (FIFO), not a file or a folder",
        ),
        u(
            "generate --weights /dev/zero --out {d}/o.png --prompt a",
            "/dev/zero is a device",
        ),
        u(
            "generate --weights {d}/loop --out {d}/o.png --prompt a",
            "loop of symbolic links",
        ),
        u(leak(g("a --vae {d}/loop")), "loop of symbolic links"),
        u(
            leak(g("a --vae {d}/fifo")),
            "is a named pipe (FIFO), not a file",
        ),
        u(leak(g("a --lora {d}")), "is a folder, not a file"),
        u(
            leak(g("a --method steps:n=99999999999")),
            "steps:n=99999999999 is not usable",
        ),
        u(
            leak(g(&format!(
                "a --method adaptive:{}",
                "delta=0.1,".repeat(10_000)
            ))),
            "more characters)",
        ),
        u(
            "bench --weights {w} --prompts {d}/graded.txt --no-clip --out {d}/b",
            "line 2: grade '2.5' is not a whole number",
        ),
        u(
            "bench --weights {w} --prompts {d}/huge.txt --steps 2 --no-clip --out {d}/b",
            "more characters)",
        ),
    ];
    for (spec, needle) in [
        (
            ":1e30",
            "is 1000000000000000000000000000000, beyond the ±100",
        ),
        (":-150", "beyond the ±100"),
        (":abc", "the scale 'abc' after"),
        (":NaN", "must be a finite number"),
    ] {
        let args = leak(g(&format!("a --lora {{d}}/lora.safetensors{spec}")));
        untrusted.push(Case {
            code: 2,
            ..u(args, needle)
        });
    }
    v.extend(untrusted);
    // Motion modules that do not fit (issue: video engine).
    let fx = |rel: &str| -> &'static str {
        Box::leak(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(rel)
                .to_str()
                .unwrap()
                .to_string()
                .into_boxed_str(),
        )
    };
    let motion = fx("tiny-animatediff/motion_adapter");
    let gm = |model: &str, motion: &str, extra: &str| -> &'static str {
        leak(format!(
            "generate --weights {model} --motion {motion} --prompt a --steps 2 --out {{d}}/o.gif {extra}"
        ))
    };
    v.extend([
        case(
            gm(fx("single-file/tiny-sdxl.safetensors"), motion, ""),
            "an SDXL model: AnimateDiff modules for SD 1.x",
        ),
        case(
            gm(fx("single-file/tiny-sd1.safetensors"), motion, ""),
            "does not fit this model: its blocks are [32, 64] wide",
        ),
        case(
            gm("{w}", fx("single-file/lora-sd1-kohya.safetensors"), ""),
            "is not a motion module: it has no motion_modules.* tensors",
        ),
        case(
            gm("{w}", fx("single-file/tiny-sd1.safetensors"), ""),
            "is not a motion module",
        ),
        case(
            gm("{w}", motion, "--frames 0"),
            "--frames must be from 1 to 128",
        ),
        case(
            gm("{w}", motion, "--frames 40"),
            "--frames is 40, beyond the motion module's position table of 32 frames",
        ),
        case(
            gm(fx("tiny-modelscope"), motion, ""),
            "a video model already",
        ),
        with(
            gm("{w}", "{d}/model.ckpt", ""),
            "pickle",
            Setup::Checkpoints,
        ),
        case(
            gm("{w}", "{d}/nothing", ""),
            "the motion module {d}/nothing does not exist",
        ),
    ]);
    // An existing output stays as it was when the command fails.
    v.push(with(
        "generate --weights {w} --prompt a --steps 0 --out {d}/old.png",
        "--steps",
        Setup::OldPng,
    ));
    v
}

/// Split a case's command line on spaces, keeping '…' groups, with `{w}` and `{d}` filled.
fn argv(line: &str, dir: &Path) -> Vec<String> {
    let line = line
        .replace("{w}", fixture().to_str().unwrap())
        .replace("{d}", dir.to_str().unwrap());
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn every_bad_input_gives_one_clear_error_and_leaves_no_file() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), c.setup);
        let before = listing(dir.path());
        let args = argv(c.args, dir.path());
        let o = adiff_in(dir.path(), &args);
        let err = text(&o.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let after = listing(dir.path());
        let problem = if o.status.code() != Some(c.code) {
            Some(format!("exit {:?}, expected {}", o.status.code(), c.code))
        } else if err.contains("panicked") {
            Some("panicked".into())
        } else if lines.len() != 1 || !lines[0].starts_with("error: ") {
            Some("not one error line".into())
        } else if !err.contains(&c.needle.replace("{d}", dir.path().to_str().unwrap())) {
            Some(format!("no '{}'", c.needle))
        } else if before != after {
            Some(format!("files changed: {before:?} → {after:?}"))
        } else if err.len() > 600 {
            Some(format!("a {}-byte message", err.len()))
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}\n    stderr: {err}", c.args));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_very_long_prompt_is_refused_with_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let long = vec!["word"; 10_000].join(" ");
    let mut args = argv(G, dir.path());
    args.push(long.clone());
    let o = adiff_in(dir.path(), &args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("77 tokens"), "{err}");
    assert!(
        err.contains("more words)"),
        "the dropped words are counted: {err}"
    );
    assert!(err.len() < 600, "{} bytes: {err}", err.len());
    // With --truncate it runs, and the warning is a plain line (no log format, no colour).
    args.push("--truncate".into());
    let o = adiff_in(dir.path(), &args);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: --prompt is longer than"), "{err}");
    assert!(!err.contains('\x1b') && !err.contains("WARN"), "{err}");
}

#[test]
fn control_characters_are_escaped_when_printed() {
    let dir = tempfile::tempdir().unwrap();
    let args = argv("generate --model x --prompt a --out {d}/o.png", dir.path());
    let mut args: Vec<String> = args;
    args[2] = "sd\x1b[2J\x07".into();
    let o = adiff_in(dir.path(), &args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\u{1b}"), "{err}");
}

/// A run of the tiny pipeline with extra arguments, in `dir`.
fn tiny_run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = argv(
        "generate --weights {w} --steps 3 --prompt 'a red circle'",
        dir,
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    adiff_in(dir, &args)
}

#[test]
fn a_full_disk_on_the_trace_leaves_no_image_and_names_the_path() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: this machine has no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.png"), b"old bytes").unwrap();
    let before = listing(dir.path());
    let out = dir.path().join("old.png");
    let o = tiny_run(
        dir.path(),
        &["--out", out.to_str().unwrap(), "--trace", "/dev/full"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write /dev/full"), "{err}");
    assert_eq!(
        listing(dir.path()),
        before,
        "the old image stays, nothing is added"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(full)
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

#[test]
fn a_symlinked_output_writes_its_target_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/trace.json"), b"old").unwrap();
    let link = dir.path().join("trace.json");
    std::os::unix::fs::symlink("real/trace.json", &link).unwrap();
    let out = dir.path().join("o.png");
    let o = tiny_run(
        dir.path(),
        &[
            "--out",
            out.to_str().unwrap(),
            "--trace",
            link.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("real/trace.json")).unwrap())
            .unwrap();
    assert_eq!(j["budget"], 3);
}

#[test]
fn a_fifo_output_is_written_to_its_reader() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trace.pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let out = dir.path().join("o.png");
    let o = tiny_run(
        dir.path(),
        &[
            "--out",
            out.to_str().unwrap(),
            "--trace",
            fifo.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(j["steps"].as_array().unwrap().len(), 3);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn a_password_in_the_ollama_url_is_never_printed_or_stored() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the scorer falls back to the heuristic, visibly.
    let args = argv(
        "complexity 'a red fox' --json --scorer ollama --ollama-url http://user:s3cret@127.0.0.1:1",
        dir.path(),
    );
    let o = adiff_in(dir.path(), &args);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("using the heuristic scorer"), "{err}");
    assert!(err.contains("http://***@127.0.0.1:1"), "{err}");
    assert!(
        !err.contains("s3cret") && !out.contains("s3cret"),
        "{err}\n{out}"
    );
}

#[test]
fn an_html_reply_is_named_not_pasted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let page = format!(
                "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>{}</body></html>",
                "<p>proxy</p>".repeat(500)
            );
            let _ = write!(
                stream,
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut args = argv(
        "complexity 'a red fox' --scorer ollama --ollama-url",
        dir.path(),
    );
    args.push(url);
    let o = adiff_in(dir.path(), &args);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("using the heuristic scorer"), "{err}");
    assert!(!err.contains("<html") && !err.contains("<p>"), "{err}");
    assert!(err.len() < 800, "{} bytes: {err}", err.len());
}

#[test]
fn latents_of_another_size_say_so() {
    use candle_core::{DType, Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let lat = dir.path().join("lat.safetensors");
    let x = Tensor::zeros((1, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), x)]),
        &lat,
    )
    .unwrap();
    let out = dir.path().join("o.png");
    let o = tiny_run(
        dir.path(),
        &[
            "--out",
            out.to_str().unwrap(),
            "--init-latents",
            lat.to_str().unwrap(),
        ],
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: --init-latents") && err.contains("gives a 128x128 image"),
        "{err}"
    );
    assert_eq!(image::open(&out).unwrap().width(), 128);
}

#[test]
fn two_benches_on_one_folder_leave_no_duplicate_run() {
    use adaptive_diffusion::bench::records::read_rows;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prompts.txt"),
        "a red circle\na blue square\n",
    )
    .unwrap();
    let args = argv(
        "bench --weights {w} --prompts {d}/prompts.txt --steps 3 --no-clip --out {d}/b",
        dir.path(),
    );
    let mut planned = None;
    let spawn = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_adiff"))
            .args(&args)
            .args(extra)
            .current_dir(dir.path())
            .env("HF_HUB_OFFLINE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for extra in [&[][..], &["--resume"][..]] {
        let (a, b) = (spawn(extra), spawn(extra));
        let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let ok = outputs.iter().filter(|o| o.status.success()).count();
        for o in outputs.iter().filter(|o| !o.status.success()) {
            let err = text(&o.stderr);
            assert!(
                // The holder is named once it has written itself into the lock file.
                err.contains("is in use by another adiff bench (process ")
                    || err.contains("is in use by another adiff bench (just starting)")
                    || (extra.is_empty() && err.contains("already holds a benchmark")),
                "{extra:?}: {err}"
            );
        }
        assert!(ok >= 1, "{extra:?}: neither bench ran");
        let rows = read_rows(&dir.path().join("b/runs.csv")).unwrap();
        let mut ids: Vec<&String> = rows.iter().map(|r| &r.run_id).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{extra:?}: duplicate rows");
        // Every planned run once: the first round's count, the resume's the same.
        assert!(n >= 4, "{extra:?}: {n} rows");
        assert_eq!(*planned.get_or_insert(n), n, "{extra:?}");
    }
}

#[test]
fn a_bench_that_fails_before_its_first_run_leaves_the_folder_as_it_was() {
    // The plain command runs again once the input is fixed (no "--resume" needed).
    let dir = tempfile::tempdir().unwrap();
    let words = "a red circle ".repeat(100);
    std::fs::write(dir.path().join("prompts.txt"), format!("{words}\n")).unwrap();
    let out = dir.path().join("b");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let before = listing(&out);
    let args = argv(
        "bench --weights {w} --prompts {d}/prompts.txt --steps 3 --no-clip --out {d}/b",
        dir.path(),
    );
    let o = adiff_in(dir.path(), &args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let mut after = listing(&out);
    after.remove(&out.join(".adiff-bench.lock"));
    assert_eq!(before, after);
}

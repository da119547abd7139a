//! The CLIP tokenizer: `tokenizer.json` when the folder has one, otherwise an equivalent
//! byte-level BPE built from `vocab.json` + `merges.txt` (what transformers'
//! `CLIPTokenizerFast` converts the slow tokenizer into).
//!
//! Prompts are wrapped in `<|startoftext|> … <|endoftext|>`, truncated to the model length
//! (reporting what was dropped) and padded with the pipeline's pad token
//! (`<|endoftext|>` for SD 1.x, `!` for SD 2.x and SDXL's second tokenizer).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::model::error::ModelError;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenisation pattern (as transformers writes it into `tokenizer.json`; the
/// special tokens are also added tokens, so they never reach it split).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The default sequence length of CLIP text encoders.
pub const DEFAULT_MAX_LEN: usize = 77;

/// The files of one `tokenizer/` folder (any may be absent; see [`ClipTokenizer::load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerFiles {
    /// `tokenizer.json` (fast tokenizer), preferred.
    pub tokenizer_json: Option<PathBuf>,
    /// `vocab.json`.
    pub vocab: Option<PathBuf>,
    /// `merges.txt`.
    pub merges: Option<PathBuf>,
    /// `tokenizer_config.json` (pad token, model_max_length).
    pub config: Option<PathBuf>,
    /// `special_tokens_map.json` (pad token when the config lacks it).
    pub special_tokens_map: Option<PathBuf>,
}

impl TokenizerFiles {
    /// Look for the standard file names in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        let found = |name: &str| {
            let p = dir.join(name);
            p.is_file().then_some(p)
        };
        Self {
            tokenizer_json: found("tokenizer.json"),
            vocab: found("vocab.json"),
            merges: found("merges.txt"),
            config: found("tokenizer_config.json"),
            special_tokens_map: found("special_tokens_map.json"),
        }
    }

    /// Whether the files are enough to build a tokenizer.
    pub fn is_usable(&self) -> bool {
        self.tokenizer_json.is_some() || (self.vocab.is_some() && self.merges.is_some())
    }
}

/// Which route built the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.json`.
    TokenizerJson,
    /// `vocab.json` + `merges.txt`.
    VocabMerges,
    /// The CLIP vocabulary shipped in the binary ([`ClipTokenizer::builtin`]).
    Builtin,
}

/// The 48 894 merges of OpenAI CLIP's BPE vocabulary (MIT licence; written by
/// `tools/reference/make_clip_bpe.py` from the file the `open_clip_torch` wheel carries).
const CLIP_MERGES: &str = include_str!("../../../assets/tokenizers/clip-bpe-merges.txt");
/// The size of every Stable Diffusion text encoder's vocabulary.
pub const CLIP_VOCAB_SIZE: usize = 49_408;

/// The padding of a Stable Diffusion family's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPad {
    /// `<|endoftext|>` (SD 1.x's CLIP ViT-L/14, SDXL's first tokenizer).
    EndOfText,
    /// `!`, id 0 (OpenCLIP: SD 2.x, SDXL's second tokenizer).
    Exclamation,
}

/// GPT-2's reversible map from bytes to printable characters, in CLIP's order: the
/// printable Latin-1 bytes keep their character, the rest take 256, 257, … in byte order.
fn byte_symbols() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let kept = (0..256).filter(|&b| printable(b));
    // The other bytes, in byte order, become 256, 257, …
    let moved = 256..256 + (0..256).filter(|&b| !printable(b)).count() as u32;
    kept.chain(moved)
        .map(|c| char::from_u32(c).expect("code points below 512 are characters"))
        .collect()
}

/// CLIP's vocabulary and merges, in id order: bytes, bytes + `</w>`, one token per
/// merge, then `<|startoftext|>` and `<|endoftext|>`.
fn builtin_vocab_merges() -> Result<(tokenizers::models::bpe::Vocab, Vec<(String, String)>)> {
    let merges = CLIP_MERGES
        .lines()
        .map(|line| {
            line.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| anyhow!("the built-in CLIP merges have a malformed line '{line}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    let symbols = byte_symbols();
    let tokens = symbols
        .iter()
        .map(|c| c.to_string())
        .chain(symbols.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([BOS.to_string(), EOS.to_string()]);
    let vocab: tokenizers::models::bpe::Vocab =
        tokens.enumerate().map(|(i, t)| (t, i as u32)).collect();
    if vocab.len() != CLIP_VOCAB_SIZE {
        bail!(
            "the built-in CLIP vocabulary has {} distinct tokens, not {CLIP_VOCAB_SIZE}",
            vocab.len()
        );
    }
    Ok((vocab, merges))
}

/// What truncation removed from a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// How many tokens did not fit.
    pub dropped_tokens: usize,
    /// The part of the prompt they came from (original spelling, trimmed).
    pub dropped_text: String,
}

/// A tokenised, padded prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Exactly `max_len` ids: BOS, the prompt, EOS, padding.
    pub ids: Vec<u32>,
    /// Index of the EOS token (where CLIP's pooled output is read).
    pub eos_position: usize,
    /// Set when the prompt was longer than the model accepts.
    pub truncated: Option<Truncated>,
}

/// A CLIP tokenizer with its padding and length settings.
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_len: usize,
    source: TokenizerSource,
    /// The id of a real "unknown word" token (word-level vocabularies), when it is not EOS.
    unk_id: Option<u32>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .field("source", &self.source)
            .finish()
    }
}

/// A token setting in tokenizer_config.json: a string or `{"content": ...}`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

fn read_json_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("could not parse {}", path.display()))
}

/// Build the CLIP byte-level BPE tokenizer from `vocab.json` and `merges.txt`.
fn build_from_vocab_merges(vocab: &Path, merges: &Path, unk: &str) -> Result<Tokenizer> {
    let utf8 = |p: &Path| {
        p.to_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("tokenizer path {} is not valid UTF-8", p.display()))
    };
    let bpe = BPE::from_file(&utf8(vocab)?, &utf8(merges)?)
        .end_of_word_suffix("</w>".into())
        .unk_token(unk.into())
        .build()
        .map_err(|e| {
            anyhow!(
                "could not build the BPE model from {} and {}: {e}",
                vocab.display(),
                merges.display()
            )
        })?;
    clip_pipeline(bpe)
}

/// CLIP's normalisation and pre-tokenisation around a byte-level BPE model (what
/// transformers' `CLIPTokenizerFast` writes into `tokenizer.json`).
fn clip_pipeline(bpe: BPE) -> Result<Tokenizer> {
    let mut tok = Tokenizer::new(bpe);
    let normalizer = NormSequence::new(vec![
        NFC.into(),
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| anyhow!("{e}"))?
        .into(),
        Lowercase.into(),
    ]);
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| anyhow!("{e}"))?;
    let split = Split::new(
        SplitPattern::Regex(CLIP_SPLIT.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let pre = PreSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]);
    tok.with_pre_tokenizer(Some(pre));
    tok.add_special_tokens([AddedToken::from(BOS, true), AddedToken::from(EOS, true)])
        .map_err(|e| anyhow!("{e}"))?;
    Ok(tok)
}

impl ClipTokenizer {
    /// The CLIP tokenizer of Stable Diffusion's text encoders, from the vocabulary shipped
    /// in the binary: what a single-file checkpoint (which carries no tokenizer) loads with,
    /// offline. Ids agree with OpenAI CLIP's / open_clip's `SimpleTokenizer` and with
    /// transformers' `CLIPTokenizerFast` on `openai/clip-vit-large-patch14`.
    pub fn builtin(pad: ClipPad) -> Result<Self> {
        let (vocab, merges) = builtin_vocab_merges()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix("</w>".into())
            .unk_token(EOS.into())
            .build()
            .map_err(|e| anyhow!("could not build the built-in CLIP BPE model: {e}"))?;
        // A new tokenizer neither truncates nor pads: `encode` does both, reporting drops.
        let inner = clip_pipeline(bpe)?;
        let id_of = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| anyhow!("the built-in CLIP vocabulary has no '{token}'"))
        };
        let (bos_id, eos_id) = (id_of(BOS)?, id_of(EOS)?);
        let pad_id = match pad {
            ClipPad::EndOfText => eos_id,
            ClipPad::Exclamation => id_of("!")?,
        };
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_len: DEFAULT_MAX_LEN,
            source: TokenizerSource::Builtin,
            unk_id: None,
        })
    }

    /// Load from a `tokenizer/` folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let files = TokenizerFiles::in_dir(dir);
        if !files.is_usable() {
            return Err(ModelError::MissingFile {
                what: "tokenizer (tokenizer.json, or vocab.json and merges.txt)".into(),
                path: dir.join("tokenizer.json"),
            }
            .into());
        }
        Self::load(&files)
    }

    /// Load from explicit files: `tokenizer.json` when present, else `vocab.json` + `merges.txt`.
    pub fn load(files: &TokenizerFiles) -> Result<Self> {
        let config = files.config.as_deref().map(read_json_value).transpose()?;
        let special_map = files
            .special_tokens_map
            .as_deref()
            .map(read_json_value)
            .transpose()?;
        let setting = |key: &str| -> Option<String> {
            config
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(token_content)
                .or_else(|| {
                    special_map
                        .as_ref()
                        .and_then(|m| m.get(key))
                        .and_then(token_content)
                })
        };
        let unk = setting("unk_token").unwrap_or_else(|| EOS.to_string());

        let (mut inner, source) = match (&files.tokenizer_json, &files.vocab, &files.merges) {
            (Some(json), _, _) => {
                let tok = Tokenizer::from_file(json)
                    .map_err(|e| anyhow!("could not load tokenizer {}: {e}", json.display()))?;
                (tok, TokenizerSource::TokenizerJson)
            }
            (None, Some(vocab), Some(merges)) => (
                build_from_vocab_merges(vocab, merges, &unk)?,
                TokenizerSource::VocabMerges,
            ),
            _ => bail!("no tokenizer.json, and vocab.json + merges.txt are not both present"),
        };
        // Truncation and padding are done here, so that what is dropped can be reported.
        inner.with_truncation(None).map_err(|e| anyhow!("{e}"))?;
        inner.with_padding(None);

        let id_of = |token: &str, role: &str| -> Result<u32> {
            inner
                .token_to_id(token)
                .ok_or_else(|| anyhow!("the tokenizer has no {role} token '{token}'"))
        };
        let bos_id = id_of(&setting("bos_token").unwrap_or_else(|| BOS.into()), "BOS")?;
        let eos_id = id_of(&setting("eos_token").unwrap_or_else(|| EOS.into()), "EOS")?;
        let pad_id = match setting("pad_token") {
            Some(pad) => id_of(&pad, "pad")?,
            None => eos_id,
        };
        let unk_id = inner.token_to_id(&unk).filter(|&id| id != eos_id);
        let max_len = config
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(|v| v.as_f64())
            .filter(|&m| (3.0..=4096.0).contains(&m))
            .map(|m| m as usize)
            .unwrap_or(DEFAULT_MAX_LEN);
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_len,
            source,
            unk_id,
        })
    }

    /// The words of `text` that the vocabulary does not know (they reach the text encoder
    /// as the unknown token). Always empty for byte-level BPE vocabularies such as CLIP's.
    pub fn unknown_words(&self, text: &str) -> Result<Vec<String>> {
        let Some(unk) = self.unk_id else {
            return Ok(vec![]);
        };
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("could not tokenize the prompt: {e}"))?;
        let mut words: Vec<String> = vec![];
        for (id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            if *id == unk
                && let Some(w) = text.get(start..end)
                && !words.iter().any(|x| x == w)
            {
                words.push(w.to_string());
            }
        }
        Ok(words)
    }

    /// Limit the sequence length (to the text encoder's position table).
    pub fn clamp_max_len(&mut self, max_positions: usize) {
        self.max_len = self.max_len.min(max_positions);
    }

    /// The padded sequence length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The pad token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The BOS token id.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The EOS token id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Which files built this tokenizer.
    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// The prompt's token ids without BOS/EOS, untruncated.
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("could not tokenize the prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenise, truncate to `max_len` (BOS and EOS included) and pad.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("could not tokenize the prompt: {e}"))?;
        let content = enc.get_ids();
        let keep = self.max_len - 2;
        let truncated = (content.len() > keep).then(|| {
            let start = enc.get_offsets()[keep].0;
            let dropped_text = text
                .get(start..)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| {
                    self.inner
                        .decode(&content[keep..], true)
                        .unwrap_or_default()
                });
            Truncated {
                dropped_tokens: content.len() - keep,
                dropped_text,
            }
        });
        let kept = &content[..content.len().min(keep)];
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos_id);
        ids.extend_from_slice(kept);
        let eos_position = ids.len();
        ids.push(self.eos_id);
        ids.resize(self.max_len, self.pad_id);
        Ok(Tokens {
            ids,
            eos_position,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal vocabulary: bytes for the letters used, a few merges.
    fn tiny_files(dir: &Path) -> TokenizerFiles {
        let mut vocab = serde_json::Map::new();
        let mut next = 0u32;
        let mut add = |t: &str, vocab: &mut serde_json::Map<String, Value>| {
            vocab.insert(t.to_string(), Value::from(next));
            next += 1;
        };
        add("!", &mut vocab);
        for c in "abcdefghijklmnopqrstuvwxyz,".chars() {
            add(&c.to_string(), &mut vocab);
            add(&format!("{c}</w>"), &mut vocab);
        }
        for t in ["ca", "cat</w>", "at</w>", "do", "dog</w>", "og</w>"] {
            add(t, &mut vocab);
        }
        add(BOS, &mut vocab);
        add(EOS, &mut vocab);
        let vp = dir.join("vocab.json");
        std::fs::write(&vp, serde_json::to_string(&vocab).unwrap()).unwrap();
        let mp = dir.join("merges.txt");
        std::fs::write(
            &mp,
            "#version: 0.2\nc a\na t</w>\nca t</w>\nd o\no g</w>\ndo g</w>\n",
        )
        .unwrap();
        let cp = dir.join("tokenizer_config.json");
        std::fs::write(&cp, r#"{"model_max_length": 8, "pad_token": "!"}"#).unwrap();
        TokenizerFiles {
            vocab: Some(vp),
            merges: Some(mp),
            config: Some(cp),
            ..Default::default()
        }
    }

    #[test]
    fn vocab_merges_tokenizer_pads_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let files = tiny_files(dir.path());
        let tok = ClipTokenizer::load(&files).unwrap();
        assert_eq!(tok.source(), TokenizerSource::VocabMerges);
        assert_eq!(tok.max_len(), 8);
        let cat = tok.inner.token_to_id("cat</w>").unwrap();
        let dog = tok.inner.token_to_id("dog</w>").unwrap();
        let t = tok.encode("  A   Cat,dog ").unwrap();
        let comma = tok.inner.token_to_id(",</w>").unwrap();
        let a = tok.inner.token_to_id("a</w>").unwrap();
        assert_eq!(
            t.ids,
            vec![tok.bos_id(), a, cat, comma, dog, tok.eos_id(), 0, 0]
        );
        assert_eq!(t.eos_position, 5);
        assert!(t.truncated.is_none());

        // 8 tokens fit: BOS + 6 + EOS.
        let t = tok.encode("cat cat cat cat cat dog Dog cat").unwrap();
        assert_eq!(t.ids.len(), 8);
        assert_eq!(t.ids[7], tok.eos_id());
        let tr = t.truncated.unwrap();
        assert_eq!(tr.dropped_tokens, 2);
        assert_eq!(tr.dropped_text, "Dog cat");

        // Empty prompt: BOS EOS pad...
        let t = tok.encode("").unwrap();
        assert_eq!(t.ids, vec![tok.bos_id(), tok.eos_id(), 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.eos_position, 1);
    }

    #[test]
    fn missing_tokenizer_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let msg = format!("{:#}", ClipTokenizer::from_dir(dir.path()).unwrap_err());
        assert!(msg.contains("tokenizer.json"), "{msg}");
        assert!(msg.contains("merges.txt"), "{msg}");
    }

    /// The shipped vocabulary gives the ids of open_clip's own tokenizer
    /// (`tests/fixtures/reference/clip_tokens.json`, `tools/reference/make_clip_bpe.py`).
    #[test]
    fn builtin_matches_open_clip() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/clip_tokens.json");
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let tok = ClipTokenizer::builtin(ClipPad::EndOfText).unwrap();
        assert_eq!(tok.inner.get_vocab_size(true), CLIP_VOCAB_SIZE);
        assert_eq!(u64::from(tok.bos_id()), reference["sot"].as_u64().unwrap());
        assert_eq!(u64::from(tok.eos_id()), reference["eot"].as_u64().unwrap());
        assert_eq!(tok.pad_id(), tok.eos_id());
        assert_eq!(tok.source(), TokenizerSource::Builtin);
        let cases = reference["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 10);
        for case in cases {
            let prompt = case["prompt"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tok.content_ids(prompt).unwrap(), want, "{prompt:?}");
        }
    }

    #[test]
    fn builtin_pads_as_its_family() {
        let clip = ClipTokenizer::builtin(ClipPad::EndOfText).unwrap();
        let open_clip = ClipTokenizer::builtin(ClipPad::Exclamation).unwrap();
        assert_eq!(open_clip.pad_id(), 0);
        let t = open_clip.encode("a horse").unwrap();
        assert_eq!(t.ids.len(), DEFAULT_MAX_LEN);
        assert_eq!(&t.ids[..4], &[49406, 320, 4558, 49407]);
        assert!(t.ids[4..].iter().all(|&id| id == 0));
        let t = clip.encode("a horse").unwrap();
        assert!(t.ids[4..].iter().all(|&id| id == 49407));
        assert!(clip.unknown_words("zxqv jekyll").unwrap().is_empty());
    }
}

//! The word-level vocabulary of the built-in model and its `tokenizer.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use super::{Background, Color, Position, Shape, Size};

/// Beginning of text (CLIP's name, so the shared tokenizer code finds it).
pub const BOS: &str = "<|startoftext|>";
/// End of text; also the pad token.
pub const EOS: &str = "<|endoftext|>";
/// Unknown word.
pub const UNK: &str = "<|unk|>";
/// Longest caption in tokens with BOS and EOS is 29 (three fully described objects);
/// the text encoder's position table.
pub const MAX_LEN: usize = 32;

/// Every word, in id order after the three special tokens.
pub fn words() -> Vec<String> {
    let mut w: Vec<String> = vec![];
    let mut add = |s: &str| {
        for part in s.split_whitespace() {
            if !w.iter().any(|x| x == part) {
                w.push(part.to_string());
            }
        }
    };
    add("a shape and on background");
    Size::ALL.iter().for_each(|x| add(x.word()));
    Color::ALL.iter().for_each(|x| add(x.word()));
    Shape::ALL.iter().for_each(|x| add(x.word()));
    Position::ALL.iter().for_each(|x| add(x.word()));
    Background::ALL.iter().for_each(|x| add(x.word()));
    w
}

/// The vocabulary: specials first (`BOS` 0, `EOS` 1, `UNK` 2), then [`words`].
pub fn vocab() -> HashMap<String, u32> {
    let mut v: HashMap<String, u32> = [BOS, EOS, UNK]
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), i as u32))
        .collect();
    for (i, w) in words().into_iter().enumerate() {
        v.insert(w, 3 + i as u32);
    }
    v
}

/// Vocabulary size.
pub fn vocab_size() -> usize {
    3 + words().len()
}

/// A word-level tokenizer: lowercase, split on whitespace and punctuation, unknown words
/// map to `UNK`; BOS / EOS are special tokens.
pub fn build_tokenizer() -> Result<Tokenizer> {
    let model = WordLevel::builder()
        .vocab(vocab().into_iter().collect())
        .unk_token(UNK.to_string())
        .build()
        .map_err(|e| anyhow!("could not build the word-level tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase))
        .map_err(|e| anyhow!("{e}"))?;
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.add_special_tokens([
        AddedToken::from(BOS, true),
        AddedToken::from(EOS, true),
        AddedToken::from(UNK, true),
    ])
    .map_err(|e| anyhow!("{e}"))?;
    Ok(tok)
}

/// Write `tokenizer.json` and `tokenizer_config.json` (BOS / EOS / pad / unk, max length)
/// into `dir`.
pub fn save_tokenizer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tok = build_tokenizer()?;
    let json = tok
        .to_string(true)
        .map_err(|e| anyhow!("could not serialise the tokenizer: {e}"))?;
    crate::output::write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": EOS,
        "model_max_length": MAX_LEN,
    });
    crate::output::write_atomic(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    Ok(())
}

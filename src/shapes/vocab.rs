//! The word-level vocabulary of the built-in model and its `tokenizer.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

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

/// The words of the motion module: the image words, then the words of clips (appended,
/// so every image word keeps its id).
pub fn video_words() -> Vec<String> {
    let mut w = words();
    for part in super::motion::Motion::VOCABULARY.split_whitespace() {
        if !w.iter().any(|x| x == part) {
            w.push(part.to_string());
        }
    }
    w
}

/// The vocabulary: specials first (`BOS` 0, `EOS` 1, `UNK` 2), then [`words`].
pub fn vocab() -> HashMap<String, u32> {
    vocab_of(words())
}

fn vocab_of(words: Vec<String>) -> HashMap<String, u32> {
    let mut v: HashMap<String, u32> = [BOS, EOS, UNK]
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), i as u32))
        .collect();
    for (i, w) in words.into_iter().enumerate() {
        v.insert(w, 3 + i as u32);
    }
    v
}

/// Vocabulary size.
pub fn vocab_size() -> usize {
    3 + words().len()
}

/// Vocabulary size of the motion module's text encoder.
pub fn video_vocab_size() -> usize {
    3 + video_words().len()
}

/// A word-level tokenizer: lowercase, split on whitespace and punctuation, punctuation
/// dropped (captions have none, so "a red circle, on black" reads as the caption would),
/// unknown words map to `UNK`; BOS / EOS are special tokens.
pub fn build_tokenizer() -> Result<Tokenizer> {
    tokenizer_of(vocab())
}

/// The tokenizer of the motion module's words ([`video_words`]).
pub fn build_video_tokenizer() -> Result<Tokenizer> {
    tokenizer_of(vocab_of(video_words()))
}

fn tokenizer_of(vocab: HashMap<String, u32>) -> Result<Tokenizer> {
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token(UNK.to_string())
        .build()
        .map_err(|e| anyhow!("could not build the word-level tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase))
        .map_err(|e| anyhow!("{e}"))?;
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Whitespace {}.into(),
        Punctuation::new(SplitDelimiterBehavior::Removed).into(),
    ])));
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
    save(dir, build_tokenizer()?)
}

/// [`save_tokenizer`] with the motion module's words.
pub fn save_video_tokenizer(dir: &Path) -> Result<()> {
    save(dir, build_video_tokenizer()?)
}

fn save(dir: &Path, tok: Tokenizer) -> Result<()> {
    std::fs::create_dir_all(dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        tok.encode(text, false).unwrap().get_ids().to_vec()
    }

    #[test]
    fn punctuation_is_dropped_and_unknown_words_map_to_unk() {
        let tok = build_tokenizer().unwrap();
        let plain = ids(&tok, "a red circle on a black background");
        assert_eq!(plain.len(), 7);
        assert_eq!(ids(&tok, "A red circle, on a black background."), plain);
        let unk = tok.token_to_id(UNK).unwrap();
        let with_unknown = ids(&tok, "a red lighthouse");
        assert_eq!(with_unknown.len(), 3);
        assert_eq!(with_unknown[2], unk);
        assert!(plain.iter().all(|&i| i != unk));
    }

    #[test]
    fn the_committed_model_tokenizer_matches_the_code() {
        let built = build_tokenizer().unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/models/shapes/tokenizer/tokenizer.json");
        let committed = Tokenizer::from_file(&path).unwrap();
        for text in [
            "a large red circle at the top left and a small blue square in the center on a gray background",
            "A red circle, on black!",
            "a watercolor lighthouse",
        ] {
            assert_eq!(ids(&built, text), ids(&committed, text), "{text}");
        }
    }
}

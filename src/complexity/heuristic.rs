//! The offline heuristic scorer: transparent word lists and counts mapped to the four
//! factors. Instant, deterministic, and the fallback when Ollama is unavailable.
//!
//! * **subjects**: distinct subject nouns (people, animals, objects, vehicles, buildings);
//!   a plural counts two, a number of three or more or "several" one more, a crowd word
//!   ("crowd", "dozens", "busy", ...) three more. Units 0–1 → 0, 2 → 1, 3–4 → 2, 5+ → 3.
//! * **scene density**: distinct setting words (street, kitchen, forest, stall, ...) count
//!   1, spatial relations and action verbs ½ each, every comma-separated clause after the
//!   first ½; a plain, white or isolated background takes 2 off. Points < 1 → 0, < 2.5 → 1,
//!   < 4.5 → 2, else 3.
//! * **lighting**: distinct light words; time-of-day and simple sources count 1, hard ones
//!   (neon, reflections, volumetric, spotlights, fireworks, smoke, ...) 1½. 0 → 0, ≤ 1.5 →
//!   1, ≤ 3.5 → 2, else 3.
//! * **fine detail**: distinct detail words (intricate, ornate, text, legible, 8k, ...)
//!   count 1, attribute words (colours, materials, sizes) ¼, a long prompt 1 or 2. < 1 → 0,
//!   < 2.5 → 1, < 4.5 → 2, else 3.
//!
//! The rationale lists the words that counted, so every score can be traced back.

use super::sanitize::sanitize;
use super::{Assessment, Factors, ScoreError, Scorer, ScorerKind};
use std::collections::BTreeSet;

#[rustfmt::skip]
const SUBJECTS: &[&str] = &[
    // people
    "man", "woman", "person", "girl", "boy", "child", "kid", "baby", "toddler", "teenager",
    "lady", "gentleman", "friend", "couple", "chef", "cook", "waiter", "waitress", "knight",
    "astronaut", "teacher", "student", "soldier", "dancer", "musician", "player", "referee",
    "fan", "vendor", "sailor", "merchant", "fishmonger", "fisherman", "king", "queen", "prince",
    "princess", "wizard", "witch", "warrior", "robot", "pedestrian", "commuter", "guest",
    "worker", "farmer", "apprentice", "blacksmith", "conductor", "violinist", "pianist",
    "saxophonist", "guitarist", "drummer", "singer", "bride", "groom", "doctor", "nurse",
    "officer", "firefighter", "monk", "samurai", "ninja", "pirate", "cowboy", "explorer",
    "hiker", "skier", "surfer", "runner", "cyclist", "driver", "passenger", "tourist",
    "shopper", "customer", "spectator", "athlete", "boxer", "artist", "painter", "scientist",
    "character", "figure", "portrait", "elf", "dwarf", "goblin", "angel", "demon", "mermaid",
    "zombie", "alien", "monster", "cyborg", "android", "superhero", "librarian", "patron",
    "visitor", "onlooker", "traveler", "traveller", "villager", "peasant", "crew",
    // animals
    "dog", "puppy", "cat", "kitten", "horse", "pony", "fox", "owl", "bird", "gull", "seagull",
    "pigeon", "parrot", "eagle", "hawk", "crow", "raven", "swan", "duck", "goose", "chicken",
    "rooster", "cow", "bull", "sheep", "goat", "pig", "lion", "tiger", "leopard", "cheetah",
    "elephant", "giraffe", "zebra", "deer", "stag", "wolf", "bear", "rabbit", "bunny",
    "squirrel", "mouse", "rat", "fish", "shark", "whale", "dolphin", "octopus", "turtle",
    "frog", "snake", "lizard", "dragon", "unicorn", "butterfly", "bee", "spider", "monkey",
    "gorilla", "panda", "koala", "kangaroo", "penguin", "camel", "hedgehog", "otter", "raccoon",
    "dinosaur", "retriever",
    // objects, food, vehicles, buildings
    "apple", "banana", "pear", "cherry", "strawberry", "lemon", "grape", "pumpkin", "mushroom",
    "cake", "bread", "croissant", "pizza", "burger", "sandwich", "ramen", "egg", "bowl",
    "plate", "cup", "mug", "bottle", "vase", "teapot", "kettle", "pot", "pan", "jar", "basket",
    "box", "crate", "bag", "suitcase", "chair", "armchair", "sofa", "couch", "table", "desk",
    "bed", "lamp", "candle", "clock", "book", "mirror", "sculpture", "statue", "fountain",
    "shoe", "boot", "hat", "umbrella", "ball", "kite", "balloon", "sword", "shield", "helmet",
    "bow", "guitar", "violin", "piano", "drum", "trumpet", "saxophone", "phone", "laptop",
    "computer", "camera", "television", "car", "taxi", "truck", "bus", "van", "tram", "train",
    "bicycle", "bike", "motorcycle", "scooter", "boat", "sailboat", "ship", "yacht", "canoe",
    "airplane", "plane", "jet", "helicopter", "airship", "rocket", "spaceship", "tractor",
    "carriage", "wagon", "cart", "tent", "flag", "banner", "tray", "toy", "doll", "key", "ring",
    "necklace", "crown", "watch", "wristwatch", "flower", "rose", "sunflower", "tulip",
    "cactus", "plant", "house", "cabin", "cottage", "castle", "tower", "lighthouse",
    "cathedral", "church", "temple", "pagoda", "windmill", "barn", "skyscraper", "building",
    "monument", "pyramid", "ambulance", "catapult", "float", "wheel", "coaster", "ladder",
    "blanket", "spell",
];

/// Words that mean "many subjects".
#[rustfmt::skip]
const CROWD: &[&str] = &[
    "crowd", "crowds", "crowded", "busy", "bustling", "packed", "dozens", "hundreds",
    "thousands", "many", "throng", "masses", "swarm", "flock", "herd", "army", "armies",
    "audience", "people", "family", "families", "group", "groups", "orchestra", "band", "rush",
];

#[rustfmt::skip]
const SETTINGS: &[&str] = &[
    "forest", "woods", "jungle", "meadow", "field", "garden", "park", "street", "road", "alley",
    "city", "town", "village", "market", "bazaar", "harbor", "harbour", "port", "dock", "beach",
    "shore", "ocean", "sea", "lake", "river", "canal", "waterfall", "mountain", "hill",
    "valley", "desert", "canyon", "gorge", "cave", "island", "sky", "cloud", "space", "planet",
    "kitchen", "room", "bedroom", "library", "cafe", "restaurant", "bar", "pub", "club", "shop",
    "store", "classroom", "office", "stage", "ballroom", "hall", "station", "platform",
    "airport", "stadium", "arena", "court", "battlefield", "square", "plaza", "bridge",
    "rooftop", "balcony", "courtyard", "farm", "ranch", "interior", "landscape", "cityscape",
    "panorama", "skyline", "festival", "parade", "party", "banquet", "wedding", "concert",
    "ceremony", "carnival", "nook", "window", "windowsill", "wall", "floor", "ceiling", "shelf",
    "bookshelf", "stall", "booth", "awning", "barrel", "bench", "fence", "tree", "rock",
    "grass", "arch", "column", "pillar", "furniture", "log", "branch", "cliff", "snow", "moon",
    "earth", "warehouse", "garage", "canopy", "picnic", "campfire", "chalkboard", "board",
    "roof", "dome", "chimney", "gate", "ruins", "asphalt", "pavement", "puddle",
];

#[rustfmt::skip]
const RELATIONS: &[&str] = &[
    "on", "under", "behind", "beside", "next", "near", "above", "below", "over", "around",
    "between", "among", "against", "before", "through", "across", "along", "inside", "atop",
    "by", "beneath", "underneath", "outside", "onto", "into", "toward", "towards", "surrounded",
    "lining", "overlooking", "facing", "together", "while", "in",
];

#[rustfmt::skip]
const ACTIONS: &[&str] = &[
    "holding", "riding", "carrying", "chasing", "playing", "serving", "selling", "flying",
    "dancing", "walking", "sitting", "standing", "reading", "writing", "eating", "drinking",
    "cooking", "chopping", "fighting", "running", "jumping", "unloading", "forging", "working",
    "performing", "laughing", "raising", "browsing", "passing", "hanging", "leaning", "grazing",
    "sleeping", "cheering", "marching", "exploding", "rising", "waving", "hugging", "talking",
    "looking", "watching", "pulling", "pushing", "throwing", "catching", "climbing", "swimming",
    "sailing", "driving", "crossing", "spraying", "casting", "sharing", "perched", "parked",
    "tackling", "singing", "shopping", "kissing", "smiling",
];

/// Words marking an empty or plain backdrop.
const PLAIN_SURFACES: &[&str] = &["background", "backdrop", "surface", "table"];
#[rustfmt::skip]
const PLAIN_ADJ: &[&str] = &[
    "plain", "white", "black", "grey", "gray", "empty", "simple", "solid", "neutral", "blank",
];
const PLAIN_WORDS: &[&str] = &["isolated", "minimal", "minimalist", "product", "icon"];

/// Light words of ordinary difficulty (1 point each).
#[rustfmt::skip]
const LIGHT_BASIC: &[&str] = &[
    "sunlight", "sun", "sunny", "sunset", "sunrise", "dawn", "dusk", "twilight", "night",
    "morning", "afternoon", "evening", "backlight", "backlit", "lamplight", "candlelight",
    "candlelit", "firelight", "moonlight", "moonlit", "shadow", "shadows", "glow", "glowing",
    "lit", "light", "lighting", "dramatic", "cinematic", "overcast", "cloudy", "stormy",
    "storm", "rain", "rainy", "fog", "foggy", "mist", "misty", "haze", "hazy", "dappled",
    "sunbeam", "sunbeams", "dim", "dark", "golden", "lamps", "candles", "lights", "sunlit",
];
/// Hard light words (1.5 points each).
#[rustfmt::skip]
const LIGHT_HARD: &[&str] = &[
    "neon", "reflection", "reflections", "reflected", "reflecting", "reflective", "mirrored",
    "volumetric", "rays", "shafts", "spotlight", "spotlights", "floodlight", "floodlights",
    "chandelier", "chandeliers", "lantern", "lanterns", "fireworks", "holographic", "hologram",
    "bokeh", "glinting", "glittering", "sparkling", "sparks", "iridescent", "caustics",
    "bioluminescent", "rim", "silhouette", "silhouetted", "smoke", "smoky", "steam", "wet",
    "puddles", "fire", "flames", "burning", "explosion", "explosions", "lightning", "embers",
    "stained", "motes", "glare", "flare", "runes",
];

#[rustfmt::skip]
const DETAIL: &[&str] = &[
    "detailed", "detail", "details", "intricate", "intricately", "ornate", "filigree", "lace",
    "embroidered", "embroidery", "patterned", "pattern", "patterns", "texture", "textured",
    "engraved", "carved", "mosaic", "tapestry", "feathered", "feathers", "jewelry", "jewels",
    "gems", "sequins", "machinery", "gears", "clockwork", "circuitry", "wires", "text",
    "lettering", "letters", "writing", "words", "legible", "readable", "slogans", "slogan",
    "typography", "calligraphy", "label", "labels", "newspaper", "map", "hands", "fingers",
    "faces", "freckles", "fur", "scales", "8k", "4k", "uhd", "hdr", "ultra", "hyperrealistic",
    "photorealistic", "hyperdetailed", "sharp", "crisp", "macro", "equations", "signs",
    "heraldic", "crests", "gilded", "spines", "hand-painted", "painted", "matte", "tuxedos",
    "gowns", "costumes", "confetti",
];
#[rustfmt::skip]
const ATTRIBUTES: &[&str] = &[
    "red", "blue", "green", "yellow", "black", "white", "grey", "gray", "orange", "purple",
    "pink", "brown", "silver", "copper", "brass", "bronze", "wooden", "glass", "leather",
    "metal", "marble", "stone", "brick", "velvet", "silk", "woolen", "ceramic", "porcelain",
    "old", "vintage", "rustic", "ancient", "tiny", "small", "large", "giant", "huge", "shiny",
    "striped", "mossy", "rocky", "snowy", "cozy", "crystal", "armored", "rolling", "long",
    "tall", "young", "boiled", "shining", "victorian", "medieval", "steampunk", "cyberpunk",
];
#[rustfmt::skip]
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "and", "with", "at", "to", "for", "is", "are", "its", "their",
    "his", "her", "them", "it", "as", "from", "that", "this",
];
const NUMBERS: &[(&str, u32)] = &[
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("several", 3),
    ("some", 3),
    ("pair", 2),
];
const IRREGULAR_PLURALS: &[(&str, &str)] = &[
    ("people", "person"),
    ("children", "child"),
    ("men", "man"),
    ("women", "woman"),
    ("mice", "mouse"),
    ("geese", "goose"),
    ("knives", "knife"),
    ("wolves", "wolf"),
    ("leaves", "leaf"),
    ("shelves", "shelf"),
    ("loaves", "loaf"),
    ("teeth", "tooth"),
    ("feet", "foot"),
];

/// The offline heuristic scorer.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicScorer;

/// A word of the prompt with its singular form and whether it was plural.
struct Word {
    raw: String,
    lemma: String,
    plural: bool,
}

fn lemmatize(w: &str, known: &[&str]) -> (String, bool) {
    if let Some((_, s)) = IRREGULAR_PLURALS.iter().find(|(p, _)| *p == w) {
        return ((*s).to_owned(), true);
    }
    if known.contains(&w) {
        return (w.to_owned(), false);
    }
    let candidates = [
        w.strip_suffix("ies").map(|s| format!("{s}y")),
        w.strip_suffix("es").map(str::to_owned),
        w.strip_suffix('s').map(str::to_owned),
    ];
    for c in candidates.into_iter().flatten() {
        if known.contains(&c.as_str()) {
            return (c, true);
        }
    }
    (w.to_owned(), false)
}

fn tokenize(text: &str) -> Vec<Word> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .flat_map(|w| {
            // keep "hand-painted" whole and also its parts
            let mut v = vec![w.to_owned()];
            if w.contains('-') {
                v.extend(w.split('-').map(str::to_owned));
            }
            v
        })
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c == '-'))
        .map(|raw| {
            let (lemma, plural) = lemmatize(&raw, SUBJECTS);
            Word { raw, lemma, plural }
        })
        .collect()
}

fn level(points: f64, cuts: [f64; 3]) -> u8 {
    cuts.iter().filter(|&&c| points >= c).count() as u8
}

/// The heuristic's full working, for tests and the rationale.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// Subject words that counted (plurals marked with `+`).
    pub subjects: Vec<String>,
    /// Crowd and number words.
    pub crowd: Vec<String>,
    /// Subject units (see the module docs).
    pub subject_units: u32,
    /// Setting words.
    pub settings: Vec<String>,
    /// Relation and action words.
    pub relations: Vec<String>,
    /// Comma-separated clauses.
    pub clauses: usize,
    /// Plain-background markers.
    pub plain: Vec<String>,
    /// Scene-density points.
    pub density_points: f64,
    /// Light words.
    pub lights: Vec<String>,
    /// Lighting points.
    pub light_points: f64,
    /// Detail words.
    pub details: Vec<String>,
    /// Attribute words.
    pub attributes: Vec<String>,
    /// Content words (not stop words).
    pub content_words: usize,
    /// Detail points.
    pub detail_points: f64,
    /// The resulting factors.
    pub factors: Factors,
}

impl HeuristicScorer {
    /// Extract the features of an already sanitized prompt.
    pub fn features(text: &str) -> Features {
        let words = tokenize(text);
        let mut f = Features::default();

        // subjects
        let mut seen = BTreeSet::new();
        let mut crowd = BTreeSet::new();
        let mut units = 0u32;
        for w in &words {
            if SUBJECTS.contains(&w.lemma.as_str()) && !CROWD.contains(&w.raw.as_str()) {
                if seen.insert((w.lemma.clone(), w.plural)) {
                    units += if w.plural { 2 } else { 1 };
                    f.subjects.push(if w.plural {
                        format!("{}+", w.lemma)
                    } else {
                        w.lemma.clone()
                    });
                }
            } else if CROWD.contains(&w.raw.as_str()) {
                if crowd.insert(w.raw.clone()) {
                    units += 3;
                    f.crowd.push(w.raw.clone());
                }
            } else if let Some((_, n)) = NUMBERS.iter().find(|(s, _)| *s == w.raw)
                && *n >= 3
                && crowd.insert(w.raw.clone())
            {
                units += 1;
                f.crowd.push(w.raw.clone());
            } else if w.raw.chars().all(|c| c.is_ascii_digit())
                && w.raw.parse::<u32>().is_ok_and(|n| (3..1000).contains(&n))
                && crowd.insert(w.raw.clone())
            {
                units += 1;
                f.crowd.push(w.raw.clone());
            }
        }
        f.subject_units = units;
        let subject_count = match units {
            0 | 1 => 0,
            2 => 1,
            3 | 4 => 2,
            _ => 3,
        };

        // scene density
        let mut settings = BTreeSet::new();
        let mut relations = BTreeSet::new();
        let mut rel_count = 0usize;
        for w in &words {
            let (lemma, _) = lemmatize(&w.raw, SETTINGS);
            if SETTINGS.contains(&lemma.as_str()) {
                if settings.insert(lemma.clone()) {
                    f.settings.push(lemma);
                }
            } else if RELATIONS.contains(&w.raw.as_str()) || ACTIONS.contains(&w.raw.as_str()) {
                rel_count += 1;
                if relations.insert(w.raw.clone()) {
                    f.relations.push(w.raw.clone());
                }
            }
        }
        f.clauses = text
            .split([',', ';', '\n'])
            .filter(|c| c.chars().any(char::is_alphanumeric))
            .count();
        for pair in words.windows(2) {
            if PLAIN_ADJ.contains(&pair[0].raw.as_str())
                && PLAIN_SURFACES.contains(&pair[1].raw.as_str())
            {
                f.plain.push(format!("{} {}", pair[0].raw, pair[1].raw));
            }
        }
        for w in &words {
            if PLAIN_WORDS.contains(&w.raw.as_str()) {
                f.plain.push(w.raw.clone());
            }
        }
        let plain_penalty = if f.plain.is_empty() {
            0.0
        } else {
            2.0 + 0.5 * (f.plain.len() - 1) as f64
        };
        f.density_points = f.settings.len() as f64
            + 0.5 * rel_count as f64
            + 0.5 * f.clauses.saturating_sub(1) as f64
            - plain_penalty;
        let scene_density = level(f.density_points, [1.0, 2.5, 4.5]);

        // lighting
        let mut lights = BTreeSet::new();
        for w in &words {
            let pts = if LIGHT_HARD.contains(&w.raw.as_str()) {
                1.5
            } else if LIGHT_BASIC.contains(&w.raw.as_str()) {
                1.0
            } else {
                continue;
            };
            if lights.insert(w.raw.clone()) {
                f.lights.push(w.raw.clone());
                f.light_points += pts;
            }
        }
        let lighting_complexity = if f.light_points <= 0.0 {
            0
        } else if f.light_points <= 1.5 {
            1
        } else if f.light_points <= 3.5 {
            2
        } else {
            3
        };

        // fine detail
        let mut details = BTreeSet::new();
        let mut attrs = BTreeSet::new();
        for w in &words {
            if DETAIL.contains(&w.raw.as_str()) {
                if details.insert(w.raw.clone()) {
                    f.details.push(w.raw.clone());
                }
            } else if ATTRIBUTES.contains(&w.raw.as_str()) && attrs.insert(w.raw.clone()) {
                f.attributes.push(w.raw.clone());
            }
        }
        f.content_words = words
            .iter()
            .filter(|w| !w.raw.contains('-') && !STOPWORDS.contains(&w.raw.as_str()))
            .count();
        let length_points = if f.content_words > 25 {
            2.0
        } else if f.content_words > 15 {
            1.0
        } else {
            0.0
        };
        f.detail_points = f.details.len() as f64 + 0.25 * f.attributes.len() as f64 + length_points;
        let fine_detail = level(f.detail_points, [1.0, 2.5, 4.5]);

        f.factors = Factors {
            subject_count,
            scene_density,
            lighting_complexity,
            fine_detail,
        };
        f
    }

    /// The rationale: which words counted for each factor.
    pub fn rationale(f: &Features) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut subjects = f.subjects.clone();
        subjects.extend(f.crowd.iter().cloned());
        let mut scene = format!(
            "setting {}; {} relation/action word(s); {} clause(s)",
            list(&f.settings),
            f.relations.len(),
            f.clauses
        );
        if !f.plain.is_empty() {
            scene.push_str(&format!("; plain background ({})", f.plain.join(", ")));
        }
        format!(
            "subjects: {} ({} unit(s)) | scene: {} | light: {} | detail: {}; {} attribute(s); {} content words",
            list(&subjects),
            f.subject_units,
            scene,
            list(&f.lights),
            list(&f.details),
            f.attributes.len(),
            f.content_words
        )
    }
}

impl Scorer for HeuristicScorer {
    fn kind(&self) -> ScorerKind {
        ScorerKind::Heuristic
    }

    fn assess(&self, prompt: &str) -> Result<Assessment, ScoreError> {
        let clean = sanitize(prompt);
        let f = Self::features(&clean.text);
        let notes = clean
            .removed
            .iter()
            .map(|r| format!("ignored text addressed to the scorer: \"{r}\""))
            .collect();
        Ok(Assessment {
            factors: f.factors,
            rationale: Self::rationale(&f),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_prompt_is_low_and_crowded_scene_high() {
        let lo = HeuristicScorer::features("a red apple on a white background").factors;
        assert_eq!(lo, Factors::default(), "{lo:?}");
        let hi = HeuristicScorer::features(
            "a crowded night market with hundreds of people, food stalls, neon signs with legible text, reflections on wet pavement, intricate, 8k",
        )
        .factors;
        assert!(hi.score() >= 0.75, "{hi:?}");
    }

    #[test]
    fn plurals_and_numbers_count() {
        let f = HeuristicScorer::features("two horses and three dogs");
        assert_eq!(f.subjects, vec!["horse+", "dog+"]);
        assert_eq!(f.factors.subject_count, 3, "{f:?}");
    }
}

//! Tasks and emotion -> class maps (SDE per dataset, CDE = MEGC2019 3-class relabelling).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Single-database (each dataset's own labels) or composite (MEGC2019 3-class) evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Sde,
    Cde,
}

/// Which dataset's label vocabulary a default map is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Casme2,
    Samm,
    Smic,
    /// Any other dataset (manifest): SDE keeps the labels found; CDE applies the union of the
    /// MEGC2019 rules.
    Other,
}

/// What an emotion maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Class(usize),
    /// Deliberately left out of the task (e.g. `others` in CDE): not a fault.
    Dropped,
    /// Neither mapped nor dropped: a fault.
    Unknown,
}

/// Emotion -> class. Emotions are matched case-insensitively after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassMap {
    pub classes: Vec<String>,
    /// Normalised (lower-case) emotion -> class name.
    pub emotions: BTreeMap<String, String>,
    /// Normalised emotions excluded from the task.
    pub dropped: BTreeSet<String>,
}

pub const CDE_CLASSES: [&str; 3] = ["negative", "positive", "surprise"];

fn norm(e: &str) -> String {
    e.trim().to_lowercase()
}

impl ClassMap {
    /// A map from `(emotion, class)` pairs; classes are ordered by first appearance.
    pub fn from_pairs<E: AsRef<str>, C: AsRef<str>>(
        pairs: impl IntoIterator<Item = (E, C)>,
        dropped: impl IntoIterator<Item = E>,
    ) -> Self {
        let mut classes: Vec<String> = Vec::new();
        let mut emotions = BTreeMap::new();
        for (e, c) in pairs {
            let c = c.as_ref().to_string();
            if !classes.contains(&c) {
                classes.push(c.clone());
            }
            emotions.insert(norm(e.as_ref()), c);
        }
        let dropped = dropped.into_iter().map(|e| norm(e.as_ref())).collect();
        Self {
            classes,
            emotions,
            dropped,
        }
    }

    /// A user map (emotion -> class name) that overrides the defaults; every emotion not in it
    /// is a fault unless listed in `dropped`.
    pub fn user(map: &BTreeMap<String, String>, dropped: &[String]) -> Self {
        // BTreeMap order would sort classes by emotion; order them by class name instead so the
        // class list does not depend on which emotion happens to sort first.
        let mut m = Self::from_pairs(map.iter().map(|(e, c)| (e.as_str(), c.as_str())), []);
        m.classes.sort();
        m.dropped = dropped.iter().map(|e| norm(e)).collect();
        m
    }

    /// A loader's map: the user's `chosen` one, else the dataset's default for the task.
    pub fn chosen_or_default(chosen: Option<&ClassMap>, kind: DatasetKind, task: Task) -> Self {
        chosen
            .cloned()
            .unwrap_or_else(|| Self::default_for(kind, task))
    }

    /// The default map for a dataset and task (see paper Sec. 4.1-4.2).
    pub fn default_for(kind: DatasetKind, task: Task) -> Self {
        use DatasetKind::*;
        match (kind, task) {
            (Casme2, Task::Sde) => Self::from_pairs(
                [
                    ("happiness", "happiness"),
                    ("surprise", "surprise"),
                    ("disgust", "disgust"),
                    ("repression", "repression"),
                    ("others", "others"),
                ],
                ["fear", "sadness"],
            ),
            (Samm, Task::Sde) => Self::from_pairs(
                [
                    ("Anger", "Anger"),
                    ("Contempt", "Contempt"),
                    ("Happiness", "Happiness"),
                    ("Surprise", "Surprise"),
                    ("Other", "Other"),
                ],
                ["Disgust", "Fear", "Sadness"],
            ),
            (Smic, _) => Self::identity(&CDE_CLASSES),
            (Casme2, Task::Cde) => {
                Self::cde(&["disgust", "repression"], &["others", "fear", "sadness"])
            }
            (Samm, Task::Cde) => Self::cde(
                &["anger", "contempt", "disgust", "fear", "sadness"],
                &["other"],
            ),
            // Union of the MEGC2019 rules, for datasets that use the same vocabulary.
            (Other, Task::Cde) => Self::cde(
                &[
                    "negative",
                    "disgust",
                    "repression",
                    "anger",
                    "contempt",
                    "fear",
                    "sadness",
                ],
                &["others", "other"],
            ),
            // Filled with the labels found by the manifest loader.
            (Other, Task::Sde) => Self::identity::<&str>(&[]),
        }
    }

    fn cde(negative: &[&str], dropped: &[&str]) -> Self {
        let mut pairs: Vec<(&str, &str)> = negative.iter().map(|e| (*e, "negative")).collect();
        pairs.push(("positive", "positive"));
        pairs.push(("happiness", "positive"));
        pairs.push(("surprise", "surprise"));
        let mut m = Self::from_pairs(pairs, dropped.iter().copied());
        m.classes = CDE_CLASSES.iter().map(|s| s.to_string()).collect();
        m
    }

    /// Each label is its own class.
    pub fn identity<S: AsRef<str>>(labels: &[S]) -> Self {
        Self::from_pairs(labels.iter().map(|l| (l.as_ref(), l.as_ref())), [])
    }

    pub fn lookup(&self, emotion: &str) -> Label {
        let e = norm(emotion);
        if let Some(c) = self.emotions.get(&e) {
            match self.classes.iter().position(|x| x == c) {
                Some(i) => Label::Class(i),
                None => Label::Unknown,
            }
        } else if self.dropped.contains(&e) {
            Label::Dropped
        } else {
            Label::Unknown
        }
    }

    /// Known emotions, for error messages.
    pub fn describe(&self) -> String {
        let known: Vec<&str> = self.emotions.keys().map(|s| s.as_str()).collect();
        let mut s = format!("known: {}", known.join(", "));
        if !self.dropped.is_empty() {
            let d: Vec<&str> = self.dropped.iter().map(|s| s.as_str()).collect();
            s.push_str(&format!("; dropped: {}", d.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cde_relabelling() {
        let c = ClassMap::default_for(DatasetKind::Casme2, Task::Cde);
        assert_eq!(c.classes, CDE_CLASSES);
        assert_eq!(c.lookup("repression"), Label::Class(0));
        assert_eq!(c.lookup("Happiness"), Label::Class(1));
        assert_eq!(c.lookup("surprise"), Label::Class(2));
        assert_eq!(c.lookup("others"), Label::Dropped);
        assert_eq!(c.lookup("fear"), Label::Dropped);
        assert_eq!(c.lookup("joy"), Label::Unknown);
        let s = ClassMap::default_for(DatasetKind::Samm, Task::Cde);
        assert_eq!(s.lookup("Contempt"), Label::Class(0));
        assert_eq!(s.lookup("Fear"), Label::Class(0));
        assert_eq!(s.lookup("Other"), Label::Dropped);
        let s5 = ClassMap::default_for(DatasetKind::Samm, Task::Sde);
        assert_eq!(s5.classes.len(), 5);
        assert_eq!(s5.lookup("Other"), Label::Class(4));
        assert_eq!(s5.lookup("Disgust"), Label::Dropped);
    }

    #[test]
    fn user_map_overrides() {
        let mut m = BTreeMap::new();
        m.insert("happiness".to_string(), "pos".to_string());
        m.insert("disgust".to_string(), "neg".to_string());
        let c = ClassMap::user(&m, &["others".to_string()]);
        assert_eq!(c.classes, ["neg", "pos"]);
        assert_eq!(c.lookup("Happiness"), Label::Class(1));
        assert_eq!(c.lookup("others"), Label::Dropped);
        assert_eq!(c.lookup("surprise"), Label::Unknown);
    }
}

//! `--include` patterns: which files of a dataset a fetch, an export or the gateway wants.

/// `--include` patterns: a file is wanted when any pattern matches its manifest path.
#[derive(Debug, Clone, Default)]
pub struct Include {
    patterns: Vec<glob::Pattern>,
    /// No file at all: a dataset fetch stops at its manifest.
    nothing: bool,
}

impl Include {
    /// Parses glob patterns (`*.json`, `data/**`); an empty list means "everything".
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| format!("invalid --include pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            nothing: false,
        })
    }

    /// Wants exactly the file at `path` (no glob characters are interpreted).
    pub fn exactly(path: &str) -> Self {
        let patterns: Vec<_> = glob::Pattern::new(&glob::Pattern::escape(path))
            .into_iter()
            .collect();
        // An escaped path always parses; should it not, want nothing rather than all.
        let nothing = patterns.is_empty();
        Self { patterns, nothing }
    }

    /// Wants no file: fetching a dataset with it fetches (and pins) only its manifest; the
    /// gateway then fetches each file when it is asked for.
    pub fn nothing() -> Self {
        Self {
            patterns: Vec::new(),
            nothing: true,
        }
    }

    /// Whether every file is wanted (no pattern was given).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.nothing
    }

    /// Checks that a user's patterns picked at least one of `paths`: patterns that match
    /// nothing are a mistake to report, not "0 files, all done". No patterns (everything)
    /// and [`Include::nothing`] always pass.
    pub fn check_matches<'a>(
        &self,
        mut paths: impl Iterator<Item = &'a str>,
    ) -> Result<(), String> {
        if self.patterns.is_empty() || paths.any(|p| self.matches(p)) {
            return Ok(());
        }
        let patterns: Vec<&str> = self.patterns.iter().map(|p| p.as_str()).collect();
        Err(format!(
            "no file of the dataset matches --include {} (see its files with `commons ls <hash>`)",
            patterns.join(" ")
        ))
    }

    /// Whether `path` is wanted.
    pub fn matches(&self, path: &str) -> bool {
        self.is_empty() || self.patterns.iter().any(|p| p.matches(path))
    }
}

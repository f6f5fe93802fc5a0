//! A builder for test daemons' `config.toml`: listeners on free loopback ports (port 0; the
//! ready line says where they landed), the ECS endpoint off unless asked for.

/// A `config.toml` under construction.
#[derive(Clone, Debug, Default)]
pub struct Toml {
    sections: Vec<String>,
    ecs: Option<String>,
    prewarm: Vec<String>,
}

impl Toml {
    /// No listener at all (not even the default IMDS one), ECS disabled.
    pub fn new() -> Toml {
        Toml::default()
    }

    /// An IMDS listener on 127.0.0.1:0 serving `profile`.
    pub fn imds(self, profile: &str) -> Toml {
        self.imds_with(profile, "")
    }

    /// An IMDS listener on 127.0.0.1:0 serving `profile`, with extra `key = value` lines.
    pub fn imds_with(mut self, profile: &str, extra: &str) -> Toml {
        self.sections.push(format!(
            "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"{profile}\"\n{extra}"
        ));
        self
    }

    /// The ECS endpoint on 127.0.0.1:0 serving exactly `profiles`.
    pub fn ecs(self, profiles: &[&str]) -> Toml {
        self.ecs_with(profiles, "")
    }

    /// The ECS endpoint on 127.0.0.1:0 serving exactly `profiles`, with extra lines.
    pub fn ecs_with(mut self, profiles: &[&str], extra: &str) -> Toml {
        let list: Vec<String> = profiles.iter().map(|p| format!("\"{p}\"")).collect();
        self.ecs = Some(format!(
            "[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [{}]\n{extra}",
            list.join(", ")
        ));
        self
    }

    /// The ECS endpoint on 127.0.0.1:0 serving every profile it can.
    pub fn ecs_all(mut self) -> Toml {
        self.ecs = Some("[ecs]\nlisten = \"127.0.0.1:0\"\n".into());
        self
    }

    /// `[refresh] prewarm`: `profiles` are minted at start-up instead of on first request (merged
    /// into a `[refresh]` section given with [`Toml::section`]).
    pub fn prewarm(mut self, profiles: &[&str]) -> Toml {
        self.prewarm
            .extend(profiles.iter().map(|p| format!("\"{p}\"")));
        self
    }

    /// Another section, as written (`[refresh]`, `[limits]`...).
    pub fn section(mut self, text: &str) -> Toml {
        self.sections.push(text.to_owned());
        self
    }

    /// The file's text.
    pub fn build(&self) -> String {
        let mut sections = self.sections.clone();
        if !self.prewarm.is_empty() {
            let line = format!("prewarm = [{}]\n", self.prewarm.join(", "));
            match sections.iter_mut().find(|s| s.starts_with("[refresh]\n")) {
                Some(s) => s.insert_str("[refresh]\n".len(), &line),
                None => sections.push(format!("[refresh]\n{line}")),
            }
        }
        // Without any `[[imds]]` the daemon would add its default listener on the fixed port
        // 9254; an empty array means none.
        let mut out = if sections.iter().any(|s| s.starts_with("[[imds]]")) {
            String::new()
        } else {
            "imds = []\n".to_owned()
        };
        out.push_str(&sections.concat());
        out.push_str(self.ecs.as_deref().unwrap_or("[ecs]\nenabled = false\n"));
        out
    }
}

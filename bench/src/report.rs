//! Results as a table for people and one JSON line per scenario for tools,
//! both from the same list of named values.

use std::fmt::Display;

pub struct Row {
    scenario: &'static str,
    cells: Vec<(&'static str, String, bool)>,
}

impl Row {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            cells: Vec::new(),
        }
    }

    /// A quoted value in JSON.
    pub fn text(mut self, name: &'static str, value: impl Display) -> Self {
        self.cells.push((name, value.to_string(), true));
        self
    }

    /// A bare JSON number (or `null`).
    pub fn num(mut self, name: &'static str, value: impl Display) -> Self {
        self.cells.push((name, value.to_string(), false));
        self
    }

    fn width(name: &str) -> usize {
        name.len().max(9)
    }

    pub fn header(&self) -> String {
        let names = self
            .cells
            .iter()
            .map(|(name, ..)| format!("{name:>w$}", w = Self::width(name)));
        format!("{:<12}{}", "scenario", names.collect::<Vec<_>>().join(" "))
    }

    pub fn table(&self) -> String {
        let values = self
            .cells
            .iter()
            .map(|(name, value, _)| format!("{value:>w$}", w = Self::width(name)));
        format!(
            "{:<12}{}",
            self.scenario,
            values.collect::<Vec<_>>().join(" ")
        )
    }

    pub fn json(&self) -> String {
        let fields = self.cells.iter().map(|(name, value, quoted)| {
            if *quoted {
                format!("\"{name}\":\"{value}\"")
            } else {
                format!("\"{name}\":{value}")
            }
        });
        format!(
            "{{\"scenario\":\"{}\",{}}}",
            self.scenario,
            fields.collect::<Vec<_>>().join(",")
        )
    }
}

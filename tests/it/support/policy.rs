//! A policy file built from values instead of YAML written by hand: registries, images and the
//! other top-level sections as JSON values, written as `publish.yaml` (JSON is YAML). For the
//! tests whose subject is not the YAML itself; those that check where a mistake is reported
//! (line, column) write their YAML as it stands.

use std::path::Path;

use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// In the order given: the order of registries is the order of preference.
    registries: Vec<(String, Value)>,
    images: Vec<Value>,
    other: Vec<(String, Value)>,
}

impl Policy {
    pub fn new() -> Policy {
        Policy::default()
    }

    /// A registry under `id`, as given.
    pub fn registry(mut self, id: &str, registry: Value) -> Policy {
        self.registries.push((id.into(), registry));
        self
    }

    /// A self-hosted registry at `host` (namespace `ml`), over plain HTTP on loopback.
    pub fn local(self, id: &str, host: &str) -> Policy {
        self.registry(id, local(host))
    }

    /// An image, as given.
    pub fn image(mut self, image: Value) -> Policy {
        self.images.push(image);
        self
    }

    /// Any other top-level key (`signing`, `runpod`, `transfer`, `upload_rate`, …).
    pub fn set(mut self, key: &str, value: Value) -> Policy {
        self.other.push((key.into(), value));
        self
    }

    /// Writes `dir/publish.yaml`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("publish.yaml"), self.text()).unwrap();
    }

    /// The policy as JSON text (which YAML reads), keys in the order given.
    pub fn text(&self) -> String {
        let json = |v: &Value| serde_json::to_string(v).unwrap();
        let key = |k: &str| json(&Value::String(k.into()));
        let registries: Vec<String> =
            self.registries.iter().map(|(k, v)| format!("    {}: {}", key(k), json(v))).collect();
        let images: Vec<String> = self.images.iter().map(|v| format!("    {}", json(v))).collect();
        let mut out = format!(
            "{{\n  \"version\": 1,\n  \"registries\": {{\n{}\n  }},\n  \"images\": [\n{}\n  ]",
            registries.join(",\n"),
            images.join(",\n")
        );
        for (k, v) in &self.other {
            out.push_str(&format!(",\n  {}: {}", key(k), json(v)));
        }
        out + "\n}\n"
    }
}

/// A self-hosted registry at `host` (namespace `ml`), over plain HTTP on loopback.
pub fn local(host: &str) -> Value {
    json!({"kind": "registry", "repository": format!("{host}/ml"), "insecure": true})
}

/// `value` with `more`'s keys added (both objects).
pub fn with(mut value: Value, more: Value) -> Value {
    let (Value::Object(v), Value::Object(m)) = (&mut value, more) else { panic!("with() takes two objects") };
    v.extend(m);
    value
}

/// Credentials read from `password_env`.
pub fn credentials(username: &str, password_env: &str) -> Value {
    json!({"username": username, "password_env": password_env})
}

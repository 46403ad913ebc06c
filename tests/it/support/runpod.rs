//! A local stand-in for RunPod's REST v2 API (templates, registry credentials, serverless
//! endpoints) that enforces what the docs say: Bearer auth, closed request bodies (unknown
//! properties are a 422 problem+json), required fields and types, unique template names, and
//! credential secrets that are never returned. It records every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::http::{Request, Response, Server};

pub const API_KEY: &str = "rp_test_key_0f1e2d3c4b5a";

#[derive(Default)]
pub struct State {
    pub templates: Vec<Map<String, Value>>,
    /// id → (name, username, password)
    pub registries: Vec<(String, String, String, String)>,
    pub endpoints: HashMap<String, Map<String, Value>>,
    /// Answer this many next requests with 429 and `Retry-After: 0`.
    pub throttle: u32,
    next: u32,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{:06}", self.next)
    }
}

pub struct FakeRunPod {
    pub server: Server,
    pub state: Arc<Mutex<State>>,
}

impl FakeRunPod {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Requests that change something (anything but GET).
    pub fn writes(&self) -> Vec<Request> {
        self.server.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    pub fn add_endpoint(&self, id: &str, image: &str) {
        let mut e = Map::new();
        e.insert("id".into(), json!(id));
        e.insert("image".into(), json!(image));
        e.insert("registry".into(), Value::Null);
        self.state.lock().unwrap().endpoints.insert(id.to_string(), e);
    }
}

fn problem(status: u16, title: &str, detail: &str, errors: &[String]) -> Response {
    let mut body = json!({"title": title, "status": status, "detail": detail});
    if !errors.is_empty() {
        body["errors"] = json!(errors);
    }
    let mut r = Response::new(status).json(&body);
    r.headers.retain(|(k, _)| k != "Content-Type");
    r.header("Content-Type", "application/problem+json")
}

const TEMPLATE_FIELDS: &[&str] = &[
    "name",
    "image",
    "args",
    "disk",
    "env",
    "ports",
    "registry",
    "mounts",
    "serverless",
    "public",
    "category",
    "startSsh",
    "startJupyter",
    "allowedCudaVersions",
];

/// Checks a template request body as the v2 schema does; returns the `errors[]` of a 422.
fn check_template(body: &Map<String, Value>, create: bool) -> Vec<String> {
    let mut errors = Vec::new();
    for k in body.keys() {
        if !TEMPLATE_FIELDS.contains(&k.as_str()) {
            errors.push(format!("$: additional properties '{k}' not allowed"));
        }
    }
    if create {
        for req in ["name", "image"] {
            if !body.contains_key(req) {
                errors.push(format!("$: missing property '{req}'"));
            }
        }
    }
    for (k, v) in body {
        let ok = match k.as_str() {
            "name" | "image" => v.as_str().is_some_and(|s| !s.is_empty()),
            "args" => v.is_string(),
            "disk" => v.as_u64().is_some_and(|d| d >= 1),
            "env" => v.as_object().is_some_and(|m| m.values().all(Value::is_string)),
            "ports" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "registry" => v.is_string() || v.is_null(),
            "mounts" => v.as_object().is_some_and(|m| m.keys().all(|k| k == "persistent")),
            "serverless" | "public" | "startSsh" | "startJupyter" => v.is_boolean(),
            "category" => matches!(v.as_str(), Some("CPU" | "NVIDIA" | "AMD")),
            "allowedCudaVersions" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            _ => true,
        };
        if !ok {
            errors.push(format!("$.{k}: invalid value {v}"));
        }
    }
    errors
}

fn full_template(id: &str, body: &Map<String, Value>) -> Map<String, Value> {
    let mut t: Map<String, Value> = json!({
        "id": id, "args": "", "disk": 50, "mounts": {}, "ports": [], "env": {}, "registry": null, "serverless": false,
        "public": false, "category": "NVIDIA", "startSsh": true, "startJupyter": true, "allowedCudaVersions": []
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    for (k, v) in body {
        t.insert(k.clone(), v.clone());
    }
    t
}

pub fn start() -> FakeRunPod {
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    let server = Server::start(move |req| handle(&st, req));
    FakeRunPod { server, state }
}

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Response {
    if req.header("authorization") != Some(format!("Bearer {API_KEY}").as_str()) {
        return problem(401, "Unauthorized", "missing or invalid API key", &[]);
    }
    let body: Option<Map<String, Value>> = if req.body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Some(m),
            _ => return problem(400, "Bad Request", "the body is not a JSON object", &[]),
        }
    };
    if body.is_some() && !req.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return problem(400, "Bad Request", "Content-Type must be application/json", &[]);
    }
    let path: Vec<&str> = req.target.split('?').next().unwrap_or("").trim_start_matches('/').split('/').collect();
    let mut s = state.lock().unwrap();
    if s.throttle > 0 {
        s.throttle -= 1;
        return problem(429, "Too Many Requests", "rate limit exceeded", &[]).header("Retry-After", "0");
    }
    match (req.method.as_str(), path.as_slice(), body) {
        ("GET", ["v2", "templates"], None) => Response::new(200).json(&json!({"templates": s.templates})),
        ("POST", ["v2", "templates"], Some(b)) => {
            let errors = check_template(&b, true);
            if !errors.is_empty() {
                return problem(422, "Unprocessable Entity", "Request validation failed.", &errors);
            }
            if s.templates.iter().any(|t| t.get("name") == b.get("name")) {
                return problem(400, "Bad Request", "a template with this name already exists", &[]);
            }
            let id = s.id("tpl");
            let t = full_template(&id, &b);
            s.templates.push(t.clone());
            Response::new(201).json(&Value::Object(t))
        }
        ("GET", ["v2", "templates", id], None) => match s.templates.iter().find(|t| t["id"] == *id) {
            Some(t) => Response::new(200).json(&Value::Object(t.clone())),
            None => problem(404, "Not Found", "no such template", &[]),
        },
        ("PATCH", ["v2", "templates", id], Some(b)) => {
            let errors = check_template(&b, false);
            if !errors.is_empty() {
                return problem(422, "Unprocessable Entity", "Request validation failed.", &errors);
            }
            let Some(t) = s.templates.iter_mut().find(|t| t["id"] == *id) else {
                return problem(404, "Not Found", "no such template", &[]);
            };
            for (k, v) in b {
                // `registry: ""` clears the credential; RunPod answers null.
                let v = if k == "registry" && v.as_str() == Some("") { Value::Null } else { v };
                t.insert(k, v);
            }
            Response::new(200).json(&Value::Object(t.clone()))
        }
        ("GET", ["v2", "registries"], None) => {
            let list: Vec<Value> =
                s.registries.iter().map(|(id, name, _, _)| json!({"id": id, "name": name})).collect();
            Response::new(200).json(&json!({"registries": list}))
        }
        ("POST", ["v2", "registries"], Some(b)) => {
            let mut errors: Vec<String> = b
                .keys()
                .filter(|k| !["name", "username", "password"].contains(&k.as_str()))
                .map(|k| format!("$: additional properties '{k}' not allowed"))
                .collect();
            for f in ["name", "username", "password"] {
                if b.get(f).and_then(Value::as_str).is_none_or(|v| v.is_empty()) {
                    errors.push(format!("$: missing property '{f}'"));
                }
            }
            if !errors.is_empty() {
                return problem(422, "Unprocessable Entity", "Request validation failed.", &errors);
            }
            let id = s.id("reg");
            let field = |f: &str| b[f].as_str().unwrap_or_default().to_string();
            s.registries.push((id.clone(), field("name"), field("username"), field("password")));
            Response::new(201).json(&json!({"id": id, "name": field("name")}))
        }
        ("DELETE", ["v2", "registries", id], None) => {
            let before = s.registries.len();
            s.registries.retain(|r| r.0 != *id);
            if s.registries.len() == before {
                problem(404, "Not Found", "no such registry", &[])
            } else {
                Response::new(204)
            }
        }
        ("GET", ["v2", "serverless", id], None) => match s.endpoints.get(*id) {
            Some(e) => Response::new(200).json(&Value::Object(e.clone())),
            None => problem(404, "Not Found", "no such endpoint", &[]),
        },
        ("PATCH", ["v2", "serverless", id], Some(b)) => {
            let errors: Vec<String> = b
                .keys()
                .filter(|k| !["image", "registry", "env", "templateId", "name"].contains(&k.as_str()))
                .map(|k| format!("$: additional properties '{k}' not allowed"))
                .collect();
            if !errors.is_empty() {
                return problem(422, "Unprocessable Entity", "Request validation failed.", &errors);
            }
            let Some(e) = s.endpoints.get_mut(*id) else { return problem(404, "Not Found", "no such endpoint", &[]) };
            for (k, v) in b {
                e.insert(k, v);
            }
            Response::new(200).json(&Value::Object(e.clone()))
        }
        _ => problem(405, "Method Not Allowed", &format!("{} {}", req.method, req.target), &[]),
    }
}

//! A registry that follows the OCI distribution spec's chunked-upload rules strictly, for
//! resume tests: `Content-Range` must start where the upload stands (416 otherwise), upload
//! status answers 204 with `Range`, partial data survives a dropped connection, and chunk
//! sizes can be limited as GHCR (at most 4 MiB) and ECR (at least 5 MiB but the last) do.
//! It can cut one PATCH after a given number of bytes of a blob. In memory, on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

#[derive(Default)]
pub struct State {
    pub blobs: HashMap<String, Vec<u8>>,
    pub manifests: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    /// Size of each upload's last accepted chunk.
    last_chunk: HashMap<String, u64>,
    next: u32,
    /// Cut the PATCH that would take an upload past this many bytes, keeping what came before.
    pub cut_at: Option<u64>,
    /// Body bytes received in PATCH and PUT requests, in all.
    pub received: u64,
    pub max_chunk: Option<u64>,
    pub min_chunk: Option<u64>,
    pub log: Vec<String>,
}

pub struct SpecRegistry {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
}

pub fn start() -> SpecRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &st);
            });
        }
    });
    SpecRegistry { port, state }
}

fn respond(s: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    respond_sized(s, status, headers, body, body.len())
}

/// An answer whose `Content-Length` is `length`: a HEAD's is the size of what a GET would send.
fn respond_sized(
    s: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    length: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

fn error(s: &mut TcpStream, status: u16, code: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#);
    respond(s, status, &[("Content-Type", "application/json".into())], body.as_bytes())
}

/// Serves requests on one connection (keep-alive) until it closes.
fn serve(stream: TcpStream, state: &Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = super::http::read_head(&mut reader)? else { return Ok(()) };
        let len = head.content_length();
        let super::http::Head { method, target, headers } = head;
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        state
            .lock()
            .unwrap()
            .log
            .push(format!("{method} {path} {}", headers.get("content-range").cloned().unwrap_or_default()));

        if method == "PATCH" && path.contains("/blobs/uploads/") {
            let id = path.rsplit('/').next().unwrap_or_default().to_string();
            let (have, cut, max, min, last) = {
                let s = state.lock().unwrap();
                let Some(data) = s.uploads.get(&id) else {
                    drop(s);
                    let mut sink = vec![0; len as usize];
                    reader.read_exact(&mut sink)?;
                    error(&mut out, 404, "BLOB_UPLOAD_UNKNOWN")?;
                    continue;
                };
                (data.len() as u64, s.cut_at, s.max_chunk, s.min_chunk, s.last_chunk.get(&id).copied())
            };
            let range = headers
                .get("content-range")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            let mut reject = |code: u16, what: &str, reader: &mut BufReader<TcpStream>| -> std::io::Result<()> {
                let mut sink = vec![0; len as usize];
                reader.read_exact(&mut sink)?;
                error(&mut out, code, what)
            };
            match range {
                Some((start, end)) if start == have && end + 1 - start == len => {}
                Some(_) => {
                    reject(416, "RANGE_INVALID", &mut reader)?;
                    continue;
                }
                None => {
                    reject(400, "BLOB_UPLOAD_INVALID", &mut reader)?;
                    continue;
                }
            }
            if max.is_some_and(|m| len > m) {
                reject(416, "REQUESTED_RANGE_NOT_SATISFIABLE", &mut reader)?;
                continue;
            }
            if let (Some(min), Some(prev)) = (min, last)
                && prev < min
            {
                reject(400, "LAYER_PART_TOO_SMALL", &mut reader)?;
                continue;
            }
            // Read the body, keeping what arrives; a cut closes the connection mid-body.
            let mut left = len;
            let mut buf = [0u8; 64 * 1024];
            while left > 0 {
                let mut n = (left as usize).min(buf.len());
                let mut cutting = false;
                if let Some(c) = cut {
                    let pos = state.lock().unwrap().uploads[&id].len() as u64;
                    if pos < c && pos + n as u64 >= c {
                        n = (c - pos) as usize;
                        cutting = true;
                    }
                }
                reader.read_exact(&mut buf[..n])?;
                let mut s = state.lock().unwrap();
                s.received += n as u64;
                if let Some(u) = s.uploads.get_mut(&id) {
                    u.extend_from_slice(&buf[..n]);
                }
                left -= n as u64;
                if cutting {
                    s.cut_at = None;
                    s.log.push(format!("cut at {c}", c = cut.unwrap_or(0)));
                    drop(s);
                    let _ = out.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
            }
            let mut s = state.lock().unwrap();
            s.last_chunk.insert(id.clone(), len);
            let size = s.uploads[&id].len();
            drop(s);
            respond(
                &mut out,
                202,
                &[("Location", path.to_string()), ("Range", format!("0-{}", size.saturating_sub(1)))],
                b"",
            )?;
            continue;
        }

        let mut body = vec![0; len as usize];
        reader.read_exact(&mut body)?;
        let mut s = state.lock().unwrap();
        s.received += if method == "PUT" && path.contains("/blobs/uploads/") { len } else { 0 };
        match method.as_str() {
            "GET" if path == "/v2/" => respond(&mut out, 200, &[], b"{}")?,
            "HEAD" if path.contains("/blobs/") => {
                let d = path.rsplit('/').next().unwrap_or_default();
                match s.blobs.get(d) {
                    Some(blob) => respond_sized(&mut out, 200, &[], b"", blob.len())?,
                    None => respond(&mut out, 404, &[], b"")?,
                }
            }
            "POST" if path.ends_with("/blobs/uploads/") => {
                s.next += 1;
                let id = format!("u{}", s.next);
                s.uploads.insert(id.clone(), Vec::new());
                respond(&mut out, 202, &[("Location", format!("{path}{id}")), ("Range", "0-0".into())], b"")?
            }
            "GET" if path.contains("/blobs/uploads/") => {
                let id = path.rsplit('/').next().unwrap_or_default();
                match s.uploads.get(id) {
                    Some(data) if data.is_empty() => respond(&mut out, 204, &[("Location", path.to_string())], b"")?,
                    Some(data) => respond(
                        &mut out,
                        204,
                        &[("Location", path.to_string()), ("Range", format!("0-{}", data.len() - 1))],
                        b"",
                    )?,
                    None => error(&mut out, 404, "BLOB_UPLOAD_UNKNOWN")?,
                }
            }
            "PUT" if path.contains("/blobs/uploads/") => {
                let id = path.rsplit('/').next().unwrap_or_default().to_string();
                let digest =
                    query.split('&').find_map(|kv| kv.strip_prefix("digest=")).unwrap_or_default().replace("%3A", ":");
                let Some(mut data) = s.uploads.remove(&id) else {
                    error(&mut out, 404, "BLOB_UPLOAD_UNKNOWN")?;
                    continue;
                };
                data.extend_from_slice(&body);
                let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
                if actual != digest {
                    error(&mut out, 400, "DIGEST_INVALID")?;
                    continue;
                }
                s.blobs.insert(digest.clone(), data);
                respond(
                    &mut out,
                    201,
                    &[("Location", format!("/v2/x/blobs/{digest}")), ("Docker-Content-Digest", digest)],
                    b"",
                )?
            }
            "PUT" if path.contains("/manifests/") => {
                let r = path.rsplit('/').next().unwrap_or_default().to_string();
                s.manifests.insert(r, body);
                respond(&mut out, 201, &[], b"")?
            }
            // Reads, as the spec has them: tags, manifests by tag or digest, blobs. Deletes
            // fall through to UNSUPPORTED, as a registry without them answers.
            "GET" if path.ends_with("/tags/list") => {
                let mut tags: Vec<&String> = s.manifests.keys().filter(|k| !k.starts_with("sha256:")).collect();
                tags.sort();
                let body = serde_json::json!({"name": "x", "tags": tags}).to_string();
                respond(&mut out, 200, &[("Content-Type", "application/json".into())], body.as_bytes())?
            }
            "GET" if path.contains("/manifests/") => {
                let r = path.rsplit('/').next().unwrap_or_default();
                let found =
                    s.manifests.get(r).or_else(|| s.manifests.values().find(|m| crate::support::image::sha(m) == r));
                match found {
                    Some(m) => {
                        let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
                        let ct =
                            v["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json").to_string();
                        respond(&mut out, 200, &[("Content-Type", ct)], &m.clone())?
                    }
                    None => error(&mut out, 404, "MANIFEST_UNKNOWN")?,
                }
            }
            "GET" if path.contains("/blobs/") => {
                let d = path.rsplit('/').next().unwrap_or_default();
                match s.blobs.get(d) {
                    Some(blob) => respond(&mut out, 200, &[], &blob.clone())?,
                    None => error(&mut out, 404, "BLOB_UNKNOWN")?,
                }
            }
            _ => error(&mut out, 404, "UNSUPPORTED")?,
        }
    }
}

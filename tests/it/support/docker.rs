//! `docker save` archives in the legacy layout, and a Docker Engine stand-in on a unix socket.

use std::path::Path;

use serde_json::json;

use super::image::{bytes, sha};

/// Writes what `docker save app:v1` writes in the legacy layout; returns the layers' diff_ids.
/// The layers are noise, not tars: for `docker load`, see `save_loadable`.
pub fn save_legacy(path: &Path, seed: u64, sizes: &[usize]) -> Vec<String> {
    let layers: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| bytes(seed * 100 + i as u64, *n)).collect();
    save_layers(path, &layers, "app:v1")
}

/// A legacy `docker save` archive a real daemon loads: each layer a tar of one file of `sizes`
/// bytes (noise seeded by `seed`), tagged `tag`. Returns the layers' diff_ids.
pub fn save_loadable(path: &Path, seed: u64, sizes: &[usize], tag: &str) -> Vec<String> {
    let layers: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| tar_layer(seed * 100 + i as u64, *n)).collect();
    save_layers(path, &layers, tag)
}

/// A layer a daemon can apply: a tar of one file `data/f{seed}` of `n` bytes of noise.
pub fn tar_layer(seed: u64, n: usize) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(n as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    t.append_data(&mut h, format!("data/f{seed}"), &bytes(seed, n)[..]).unwrap();
    t.into_inner().unwrap()
}

/// A legacy `docker save` archive of these layers (their bytes as they are), tagged `tag`.
pub fn save_layers(path: &Path, layers: &[Vec<u8>], tag: &str) -> Vec<String> {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let config_name = format!("{}.json", &sha(config.as_bytes())[7..]);
    add(&config_name, config.as_bytes());
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("layer{i:02}/layer.tar");
        add(&p, l);
        paths.push(p);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": paths}]).to_string();
    add("manifest.json", manifest.as_bytes());
    diff_ids
}

/// A Docker Engine stand-in on a unix socket: answers the image-export call with a real
/// `docker save` archive (chunked, as the daemon streams it) and 404 for other images.
pub fn fake_daemon(dir: &Path, archive: Vec<u8>) -> std::path::PathBuf {
    use std::io::{BufRead, BufReader};
    let socket = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut out = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h.trim().is_empty() {
                    break;
                }
            }
            // A client that stops reading (the push has what it needs) closes the connection:
            // that ends this answer, never the stand-in.
            let _ = answer(&mut out, &line, &archive);
        }
    });
    socket
}

/// The stand-in's answer to one request line: the archive for `app:v1`, else a 404.
fn answer(out: &mut impl std::io::Write, line: &str, archive: &[u8]) -> std::io::Result<()> {
    if line.starts_with("GET /images/app:v1/get ") {
        write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        for chunk in archive.chunks(100_000) {
            write!(out, "{:x}\r\n", chunk.len())?;
            out.write_all(chunk)?;
            write!(out, "\r\n")?;
        }
        write!(out, "0\r\n\r\n")
    } else {
        let body = r#"{"message":"reference does not exist"}"#;
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// A Docker Engine stand-in that starts the export of any image and then sends nothing more,
/// holding the connection until the client closes it: a hung daemon.
pub fn stalling_daemon(dir: &Path) -> std::path::PathBuf {
    use std::io::{BufRead, BufReader, Read, Write};
    let socket = dir.join("stalling.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(mut out) = stream.try_clone() else { continue };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n";
            // Part of a first tar header: the rest never comes.
            let _ = out
                .write_all(head.as_bytes())
                .and_then(|()| out.write_all(b"64\r\n"))
                .and_then(|()| out.write_all(&[b'a'; 0x64]));
            // Until the client gives up and closes.
            let _ = reader.read(&mut [0u8; 1]);
        }
    });
    socket
}

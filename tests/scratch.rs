use publish_action::policy::model::Policy;
fn show(y: &str) {
    let mut path = None;
    let r = serde_saphyr::with_deserializer_from_str(y, |de| serde_path_to_error::deserialize::<_, Policy>(de).map_err(|e| { path = Some(e.path().to_string()); e.into_inner() }));
    match r {
        Ok(p) => println!("OK {:?}", p.version),
        Err(e) => { println!("PATH {:?} LOC {:?} MSG<<{}>>", path, e.location().map(|l| (l.line(), l.column())), e); if let serde_saphyr::Error::Message{msg, ..} = &e { println!("RAW {msg}"); } },
    }
}
#[test]
fn scratch() {
    show("version: 1\nimages:\n  - name: a\n    source: oci:x\n    tgas: [a]\n");
    show("version: 1\nimages:\n  - name: a\n    source: oci:x\n    tags: 5\n");
    show("version: one\n");
    show("version: 1\nregistries:\n  home:\n    kind: quay\n    repository: x\n");
    show("version: 1\nregistries:\n  home:\n    kind: registry\n    repository: x\n    insecure: maybe\n");
    show("version: 1\nimages: [\n");
    show("version: 1\nimages:\n  - name: a\n");
    show("version: 1\nimages:\n  - name: a\n    source: oci:x\n    tags: [{a: 1}]\n");
}

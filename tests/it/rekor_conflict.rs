//! A Rekor 409 (the entry exists) is treated as already logged: the existing entry is
//! fetched from the `Location` Rekor names and used.

use crate::support::sigstore::{self, REQUEST_TOKEN};

#[tokio::test]
async fn an_existing_rekor_entry_is_retrieved_not_an_error() {
    let s = sigstore::start();
    let endpoints = publish_action::sign::keyless::Endpoints { fulcio: s.fulcio_url(), rekor: s.rekor_url() };
    let oidc = publish_action::sign::keyless::Oidc {
        url: s.token_url(),
        token: publish_action::types::Secret::new(REQUEST_TOKEN),
    };
    let session = publish_action::sign::keyless::Session::start(&endpoints, &oidc, &Default::default()).await.unwrap();
    assert_eq!(session.identity, sigstore::identity());
    let data = b"payload";
    let sig = session.sign(data).unwrap();
    let first = session.rekor.hashedrekord(data, &sig, session.leaf_pem()).await.unwrap();
    let again = session.rekor.hashedrekord(data, &sig, session.leaf_pem()).await.unwrap();
    assert_eq!(first.uuid, again.uuid);
    assert_eq!(first.log_index, again.log_index);
    assert_eq!(s.rekor_entries.lock().unwrap().len(), 1);
    assert!(first.proof.is_some() && first.set.is_some(), "{first:?}");
    let fetched =
        s.rekor.requests().iter().filter(|r| r.method == "GET" && r.target.starts_with("/api/v1/log/entries/")).count();
    assert_eq!(fetched, 1, "the second upload got a 409 and the entry was fetched from its Location");
}

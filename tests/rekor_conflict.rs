//! A Rekor 409 (the entry exists) is treated as already logged: the existing entry is
//! retrieved and used. Its own test binary, because it sets the Actions token variables.

mod support;

use support::sigstore::{self, REQUEST_TOKEN};

#[tokio::test]
async fn an_existing_rekor_entry_is_retrieved_not_an_error() {
    let s = sigstore::start();
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url());
        std::env::set_var("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN);
    }
    let endpoints = publish_action::sign::keyless::Endpoints { fulcio: s.fulcio_url(), rekor: s.rekor_url() };
    let session = publish_action::sign::keyless::Session::start(&endpoints).await.unwrap();
    assert_eq!(session.identity, sigstore::identity());
    let data = b"payload";
    let sig = session.sign(data).unwrap();
    let first = session.log(data, &sig).await.unwrap();
    let again = session.log(data, &sig).await.unwrap();
    assert_eq!(first.uuid, again.uuid);
    assert_eq!(first.log_index, again.log_index);
    assert_eq!(s.rekor_entries.lock().unwrap().len(), 1);
    let conflicts = s.rekor.requests().iter().filter(|r| r.target == "/api/v1/log/entries/retrieve").count();
    assert_eq!(conflicts, 1, "the second upload got a 409 and was retrieved");
}

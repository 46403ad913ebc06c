//! `publish plan`, when it measures: for a docker source, which of its layers to compress each
//! target's repository already holds (an image there lists the same diff_id, compressed the same
//! way: reused from that tag, neither compressed nor sent) and which are to compress and send.
//! Read-only, and what the push finds the same way (`push::layers`); the push still confirms each
//! reused blob with a HEAD. A repository that cannot be read is left unsaid, not guessed.

use super::{ImagePlan, Measure, Plan, TargetPlan};
use crate::credentials::Env;
use crate::http::ClientConfig;
use crate::image::Deferred;
use crate::image::compress::Compression;
use crate::push::{self as layers, LayerReuse};

/// Fills each target's `layers` for images with layers to compress, as `scope` allows: with
/// `--measure`, every target (anonymously where no credential is there); by default, targets
/// whose credentials are there.
pub async fn look(plan: &mut Plan, env: &Env, scope: Measure, config: &ClientConfig) {
    if scope == Measure::Nothing {
        return;
    }
    for img in &mut plan.images {
        let Some(deferred) = deferred_of(img) else { continue };
        for t in &mut img.targets {
            match look_one(t, &deferred, env, scope, config).await {
                Ok(Some(found)) => t.layers = found,
                Ok(None) => {}
                Err(e) => tracing::warn!(target = %t.id, "the layers the repository holds were not looked up: {e}"),
            }
        }
    }
}

/// The layers to compress as the plan lists them.
fn deferred_of(img: &ImagePlan) -> Option<Deferred> {
    let compression = Compression::new(img.open.compression, img.open.compression_level)?;
    let layers: Vec<_> =
        img.blobs.iter().filter(|b| b.compress.is_some()).map(|b| (b.digest.clone(), b.size.0)).collect();
    (!layers.is_empty()).then(|| Deferred::new(compression, layers))
}

async fn look_one(
    t: &TargetPlan,
    deferred: &Deferred,
    env: &Env,
    scope: Measure,
    config: &ClientConfig,
) -> anyhow::Result<Option<Vec<LayerReuse>>> {
    let credential = t.credentials.resolve(env).ok().and_then(|c| c.credential());
    if scope.need_credentials() && credential.is_none() {
        return Ok(None);
    }
    let dest = crate::execute::destination(t, credential, *config);
    let client = dest.access.client(&dest.path)?.with_scope(&format!("repository:{}:pull", dest.path));
    client.authenticate().await?;
    let found = layers::learn_with_tags(&client, deferred, &t.tags).await;
    Ok(Some(layers::reuse_list(deferred, &found)))
}

//! A chat request's media before it is priced: inline media held to the size caps, image URLs
//! fetched by the gateway (`crate::media::fetch`, concurrently, SSRF-checked) and replaced by
//! what they served. Any refusal is a 400 naming the part; nothing has been held, quoted or sent
//! upstream yet, so nothing is charged.

use std::sync::Arc;

use super::State;
use super::types::ChatRequest;
use crate::error::{Error, MediaFault, RequestError};
use crate::media::fetch::Budget;
use crate::media::{Declared, Media};
use crate::openai::content::Piece;

/// Checks every media piece of `chat` against `media.*` and fetches its image URLs.
pub async fn prepare(state: &State, chat: &mut ChatRequest) -> Result<(), Error> {
    let cfg = &state.config.media;
    let budget = Budget::new(cfg.max_total_bytes);
    let mut remote = Vec::new();
    for (i, m) in chat.messages.iter().enumerate() {
        for (j, p) in m.pieces.iter().enumerate() {
            match p {
                Piece::Media(media) => {
                    let param = || format!("messages[{i}].content[{j}]");
                    if media.bytes > cfg.max_item_bytes {
                        return Err(RequestError::media(
                            MediaFault::TooLarge,
                            param(),
                            format!(
                                "{} bytes of {} exceed the gateway's {}-byte cap per item",
                                media.bytes, media.mime, cfg.max_item_bytes
                            ),
                        )
                        .into());
                    }
                    if !budget.take(media.bytes) {
                        return Err(total_exceeded(param(), cfg.max_total_bytes).into());
                    }
                }
                Piece::Remote { url, param } => remote.push((i, j, url.clone(), param.clone())),
                Piece::Text(_) => {}
            }
        }
    }
    let Some((_, _, _, first)) = remote.first() else {
        return Ok(());
    };
    if !cfg.fetch {
        return Err(RequestError::media(
            MediaFault::Forbidden,
            first.clone(),
            "this gateway does not fetch image URLs; send the image as a data: URL",
        )
        .into());
    }
    if let Some((_, _, _, param)) = remote.get(cfg.max_urls) {
        return Err(RequestError::media(
            MediaFault::Invalid,
            param.clone(),
            format!(
                "at most {} image URLs per request; send the others as data: URLs",
                cfg.max_urls
            ),
        )
        .into());
    }
    let fetches = remote.iter().map(|(_, _, url, param)| {
        let budget = &budget;
        async move {
            let fetched = state.media.fetch(url, budget).await.map_err(|e| {
                metrics::counter!("vectorway_media_fetches_total", "outcome" => "refused")
                    .increment(1);
                RequestError::media(e.fault, param.clone(), e.message)
            })?;
            metrics::counter!("vectorway_media_fetches_total", "outcome" => "fetched").increment(1);
            Media::new(Declared::Image, &fetched.bytes, None)
                .map(Arc::new)
                .map_err(|u| {
                    RequestError::media(
                        MediaFault::UnsupportedType,
                        param.clone(),
                        format!("the URL served {}: {}", fetched.content_type, u.0),
                    )
                })
        }
    });
    let fetched = futures_util::future::try_join_all(fetches).await?;
    for ((i, j, _, _), media) in remote.into_iter().zip(fetched) {
        if let Some(p) = chat.messages.get_mut(i).and_then(|m| m.pieces.get_mut(j)) {
            *p = Piece::Media(media);
        }
    }
    Ok(())
}

fn total_exceeded(param: String, total: usize) -> RequestError {
    RequestError::media(
        MediaFault::TooLarge,
        param,
        format!("the request's media exceed the gateway's total cap of {total} bytes"),
    )
}

//! The read path: a page of a user's home feed, newest first.
//!
//! 1. Post ids of the non-celebrity authors the user follows: the cached feed, or on a miss
//!    the database (newest [`FEED_LEN`]), stored back in the cache. A page that runs past
//!    the end of a full cached feed reads the older ids from the database.
//! 2. Post ids of the celebrities the user follows, from the database (fan-out on read);
//!    the list of those celebrities is itself cached.
//! 3. Both merged newest first, duplicates removed, cut to the page; then the posts
//!    themselves, from the cache or (for the misses, in one query) the database.

use std::sync::Arc;

use crate::AppState;
use crate::cache::{FEED_LEN, Kind};
use crate::db::Post;
use crate::error::AppError;

/// One page.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Page {
    /// Posts, newest first.
    pub items: Vec<Post>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

fn count(state: &AppState, kind: Kind, hit: bool) {
    if let Some(m) = &state.metrics {
        m.cache_lookup(kind, hit);
    }
}

/// Reads the page of `user`'s feed with ids below `cursor` (all when `None`).
pub async fn read(
    state: &AppState,
    user: i64,
    cursor: Option<i64>,
    limit: usize,
) -> Result<Page, AppError> {
    let before = cursor.unwrap_or(i64::MAX);
    let want = limit + 1;
    let threshold = state.config.celebrity_threshold;

    let cached = state.cache.feed(user).await?;
    count(state, Kind::Feed, cached.is_some());
    let feed: Arc<Vec<i64>> = match cached {
        Some(f) => f,
        None => {
            let ids = state
                .db
                .fanned_out_feed(user, threshold, i64::MAX, FEED_LEN as i64)
                .await?;
            state.cache.set_feed(user, ids.clone()).await?;
            Arc::new(ids)
        }
    };
    let mut ids: Vec<i64> = feed
        .iter()
        .copied()
        .filter(|id| *id < before)
        .take(want)
        .collect();
    if ids.len() < want && feed.len() >= FEED_LEN {
        let from = ids
            .last()
            .copied()
            .unwrap_or(before)
            .min(feed.last().copied().unwrap_or(before));
        let more = state
            .db
            .fanned_out_feed(user, threshold, from, (want - ids.len()) as i64)
            .await?;
        ids.extend(more);
    }

    let celebs = match state.cache.celebrities(user).await? {
        Some(c) => {
            count(state, Kind::Celebrities, true);
            c
        }
        None => {
            count(state, Kind::Celebrities, false);
            let c = state.db.followed_celebrities(user, threshold).await?;
            state.cache.set_celebrities(user, c.clone()).await?;
            Arc::new(c)
        }
    };
    if !celebs.is_empty() {
        ids.extend(state.db.posts_by(&celebs, before, want as i64).await?);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    let next_cursor = (ids.len() > limit).then(|| ids[limit - 1]);
    ids.truncate(limit);

    let cached = state.cache.posts(&ids).await?;
    let mut missing = Vec::new();
    for (id, p) in ids.iter().zip(&cached) {
        count(state, Kind::Post, p.is_some());
        if p.is_none() {
            missing.push(*id);
        }
    }
    let fetched = state.db.posts(&missing).await?;
    state.cache.set_posts(&fetched).await?;
    let mut items = Vec::with_capacity(ids.len());
    for (id, p) in ids.iter().zip(cached) {
        match p {
            Some(p) => items.push((*p).clone()),
            None => items.extend(fetched.iter().find(|f| f.id == *id).cloned()),
        }
    }
    Ok(Page { items, next_cursor })
}

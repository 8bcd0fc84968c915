//! Parsing of large bodies off the async workers (the request's thread turns blocking).
//!
//! A body of at most [`INLINE_MAX`] bytes is parsed where it is (well under a millisecond). A
//! larger one is parsed off the async workers (`block_in_place`; `spawn_blocking` on a
//! current-thread runtime), at most [`running`] at once; at most
//! [`MAX_WAITING`] more wait for a slot, and a body beyond that is answered 503 at once, so a
//! flood of large bodies queues neither unbounded work nor unbounded memory, and the async
//! workers keep serving every other route meanwhile.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use crate::api::error::ApiError;

/// Bodies up to this size are parsed inline, on the async worker.
pub const INLINE_MAX: usize = 8 * 1024;
/// Large bodies that may wait for a parsing slot.
pub const MAX_WAITING: usize = 64;

/// Large-body parses that run at once: the number of CPUs, from 2 to 16.
pub fn running() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .clamp(2, 16)
}

static RUNNING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(running()));
static ADMITTED: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(running() + MAX_WAITING));

/// Runs `parse` (the parse of a `len`-byte body): inline when small, else on the blocking
/// pool. `Err` (503) when the pool and its wait queue are full.
pub async fn offload<T, F>(len: usize, parse: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if len <= INLINE_MAX {
        return Ok(parse());
    }
    let Ok(admitted) = ADMITTED.try_acquire() else {
        tracing::warn!(
            body_bytes = len,
            running = running(),
            waiting = MAX_WAITING,
            "Body refused: too many large bodies are being parsed"
        );
        return Err(ApiError::Busy(
            "Too many large request bodies are being parsed; retry later",
        ));
    };
    let slot = RUNNING.acquire().await.map_err(|_| ApiError::Internal)?;
    // On a multi-thread runtime the parse runs on this task's thread, which tokio turns into a
    // blocking thread meanwhile (its other tasks move to another worker), not on a
    // `spawn_blocking` thread: the parsed body is freed later by the async workers, mimalloc
    // hands such cross-thread frees back to the allocating thread's heap, and on the blocking
    // pool's thread that memory was not reused, so every large hook kept its body's memory
    // (measured: ~2 MiB of RSS per 1 MiB hook, tests/it/hostile_streams.rs).
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        let _held = (admitted, slot);
        return Ok(tokio::task::block_in_place(parse));
    }
    let done = tokio::task::spawn_blocking(move || {
        let _held = (admitted, slot);
        parse()
    })
    .await;
    done.map_err(|e| {
        tracing::error!(error = %e, "Body parse task failed");
        ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_large_bodies_is_refused_beyond_the_queue() {
        assert_eq!(offload(10, || 7).await, Ok(7));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
        let mut held = Vec::new();
        for _ in 0..running() + MAX_WAITING {
            let gate = gate.clone();
            held.push(tokio::spawn(offload(INLINE_MAX + 1, move || {
                let _ = gate.lock().map(|g| g.recv());
            })));
        }
        // Let every task take its admission.
        while ADMITTED.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            offload(INLINE_MAX + 1, || ()).await,
            Err(ApiError::Busy(_))
        ));
        // Small bodies are never queued.
        assert_eq!(offload(INLINE_MAX, || 1).await, Ok(1));
        for _ in 0..held.len() {
            release.send(()).unwrap();
        }
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
        assert_eq!(offload(INLINE_MAX + 1, || 2).await, Ok(2));
    }
}

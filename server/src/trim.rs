//! Giving memory back after a crowd has come or gone.
//!
//! A burst of arrivals allocates a lot for a short time (each newcomer's
//! `graph.sync`, the digests, the handshakes) and frees it again. Once the
//! number of sessions has been still for a moment after a large change,
//! this thread asks both allocators to return their free pages at once:
//! mimalloc, the server's (`main.rs`), which also returns them by itself
//! after a delay (`mi_collect`); and glibc's, which the C libraries
//! (libgit2, zstd) use, and which would keep them (`malloc_trim`). It never
//! runs during the burst itself, and it costs nothing while nothing
//! changes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Sessions opened or closed since the last trim that make one worth it.
const CHURN: u64 = 1000;
/// How long the number of sessions must be still before trimming.
const QUIET: Duration = Duration::from_secs(2);
/// How often the thread looks.
const LOOK: Duration = Duration::from_millis(500);

/// Starts the thread; it ends soon after `shutdown` is cancelled.
///
/// # Errors
/// The thread could not be started.
pub fn spawn(metrics: Arc<Metrics>, shutdown: CancellationToken) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gitmind-trim".into())
        .spawn(move || {
            let mut trimmed_at = churn(&metrics);
            let (mut seen, mut still_since) = (trimmed_at, Instant::now());
            while !shutdown.is_cancelled() {
                std::thread::sleep(LOOK);
                let now = churn(&metrics);
                if now != seen {
                    (seen, still_since) = (now, Instant::now());
                } else if now - trimmed_at >= CHURN && still_since.elapsed() >= QUIET {
                    let started = Instant::now();
                    give_back();
                    metrics.memory_trims.fetch_add(1, Relaxed);
                    tracing::debug!(took = ?started.elapsed(), "gave freed memory back");
                    trimmed_at = now;
                }
            }
        })
        .map(drop)
}

/// Sessions opened plus sessions closed since the start.
fn churn(metrics: &Metrics) -> u64 {
    let opened = metrics.sessions_opened.load(Relaxed);
    let open = u64::try_from(metrics.connections()).unwrap_or(0);
    opened + opened.saturating_sub(open)
}

/// Returns the free pages of both allocators to the system.
#[allow(unsafe_code)] // Calls into the C allocators, nothing else.
fn give_back() {
    // SAFETY: mi_collect frees only what mimalloc holds free, under its own
    // synchronization; it is safe to call from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under
    // its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

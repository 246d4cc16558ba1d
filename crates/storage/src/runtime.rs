//! The async runtime behind the OpenDAL backends.
//!
//! OpenDAL is async; the [`Storage`](crate::Storage) trait is sync. Every
//! OpenDAL-backed storage shares one small multi-threaded tokio runtime, owned by
//! this module and started on first use. A sync call spawns its future on that
//! runtime and parks the calling thread until the result arrives, so it works
//! from any number of std threads at once and even from a thread that is itself
//! inside some other tokio runtime (where `Runtime::block_on` would panic).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// Worker threads of the shared runtime. The work is network-bound; two threads
/// drive hundreds of concurrent requests.
const WORKER_THREADS: usize = 2;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("lifeboat-storage-io")
            .enable_all()
            .build()
            .expect("the storage I/O runtime must start (threads and timers are available)")
    })
}

/// Run `fut` on the shared runtime and wait for its output on the calling thread.
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        // The receiver only goes away if the caller's thread died; nothing to do then.
        let _ = tx.send(fut.await);
    });
    match rx.recv() {
        Ok(out) => out,
        // The task panicked: surface the panic on the caller's thread.
        Err(_) => panic!("a storage I/O task panicked on the shared runtime"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn many_threads_share_the_runtime() {
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16u64)
                .map(|i| {
                    s.spawn(move || {
                        super::block_on(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            i
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(total, (0..16u64).sum::<u64>());
    }

    #[test]
    fn works_inside_another_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v = rt.block_on(async { super::block_on(async { 7 }) });
        assert_eq!(v, 7);
    }
}

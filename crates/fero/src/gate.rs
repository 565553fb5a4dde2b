//! [`PageGate`]: tells a page fetched ahead when the page before it has been applied.

use tokio::sync::watch;

/// Opens when the apply of the page before a prefetched page ends (applied, failed or
/// cancelled).
///
/// The engine fetches page `k + 1` while page `k` is applied, and hands the fetch of page `k + 1`
/// a gate that opens when page `k`'s apply ends
/// ([`InitialSyncHandler::prefetch_remote_data`](crate::InitialSyncHandler::prefetch_remote_data),
/// [`BackgroundSyncHandler::prefetch_remote_changes`](crate::BackgroundSyncHandler::prefetch_remote_changes)).
/// A transport can send its request at once, so the server's work and the transfer overlap the
/// apply, and read the answer only after [`PageGate::ready`]: a process killed mid-apply then
/// loses at most the one page it had read and not yet applied, instead of two. Waiting is only
/// about waste, never about correctness: checkpoints are saved in page order either way.
///
/// # Examples
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let gate = fero::PageGate::open();
/// assert!(gate.is_open());
/// gate.ready().await; // an open gate is ready at once
///
/// let (opener, gate) = fero::PageGate::closed();
/// assert!(!gate.is_open());
/// opener.open(); // what the engine does when the apply before the page ends
/// gate.ready().await;
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct PageGate {
    /// `None`: open from the start.
    state: Option<watch::Receiver<bool>>,
}

/// Opens its [`PageGate`] when told to or when dropped (the apply future was cancelled).
#[derive(Debug)]
pub struct GateOpener(watch::Sender<bool>);

impl GateOpener {
    /// Opens the gate.
    pub fn open(self) {
        // Dropping opens it.
    }
}

impl Drop for GateOpener {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl PageGate {
    /// A gate that is open: for a fetch with no apply before it.
    pub fn open() -> Self {
        PageGate { state: None }
    }

    /// A closed gate and what opens it. The engine makes these; a transport's tests can too.
    pub fn closed() -> (GateOpener, PageGate) {
        let (tx, rx) = watch::channel(false);
        (GateOpener(tx), PageGate { state: Some(rx) })
    }

    /// `true` once the apply before this page has ended.
    pub fn is_open(&self) -> bool {
        self.state.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// Resolves once the apply before this page has ended (at once for an open gate).
    pub async fn ready(&self) {
        if let Some(rx) = &self.state {
            let mut rx = rx.clone();
            // An error means the opener is gone, which also opens the gate.
            let _ = rx.wait_for(|open| *open).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_opens_when_told_or_when_its_opener_is_dropped() {
        let (opener, gate) = PageGate::closed();
        let copy = gate.clone();
        assert!(!gate.is_open());
        let waiting = tokio::spawn(async move { copy.ready().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        opener.open();
        waiting.await.unwrap();
        assert!(gate.is_open());

        let (opener, gate) = PageGate::closed();
        drop(opener);
        gate.ready().await;
        assert!(gate.is_open());
    }
}

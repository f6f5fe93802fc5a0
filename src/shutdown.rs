//! Shutdown signalling: a [`Trigger`] fires once and every [`Shutdown`] subscribed to it wakes.
//! Triggers nest ([`Trigger::child_of`]): a listener's own stop fires with the daemon's.

use tokio::sync::watch;

/// The firing side.
#[derive(Debug)]
pub(crate) struct Trigger(watch::Sender<bool>);

/// The waiting side; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Trigger {
    /// A trigger that has not fired.
    pub fn new() -> Trigger {
        Trigger(watch::channel(false).0)
    }

    /// A trigger that fires on its own or when `parent` fires.
    pub fn child_of(parent: &Shutdown) -> Trigger {
        let child = Trigger::new();
        let tx = child.0.clone();
        let mut parent = parent.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.wait() => { let _ = tx.send(true); }
                _ = tx.closed() => {}
            }
        });
        child
    }

    /// Fires (idempotent).
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A waiter.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Resolves once the trigger fired (or was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_fire_with_their_parent_and_alone() {
        let parent = Trigger::new();
        let a = Trigger::child_of(&parent.subscribe());
        let b = Trigger::child_of(&parent.subscribe());
        let (mut wa, mut wb) = (a.subscribe(), b.subscribe());
        b.fire();
        wb.wait().await;
        assert!(!*wa.0.borrow(), "a sibling's stop does not stop `a`");
        parent.fire();
        wa.wait().await;
    }
}

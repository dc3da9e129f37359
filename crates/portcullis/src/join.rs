//! [`join_all`]: waiting for several futures at once, without a runtime task per future.

use std::future::Future;
use std::task::Poll;

/// Runs `futures` at once and gives their outputs in order: store lookups of one request
/// that do not depend on each other cost one round trip together, not one each.
pub async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => busy = true,
                }
            }
        }
        if busy { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outputs_keep_their_order_whatever_order_they_finish_in() {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<u8>();
        let (second_tx, second_rx) = tokio::sync::oneshot::channel::<u8>();
        let answers = tokio::spawn(async move {
            join_all([first_rx, second_rx].into_iter())
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        // The second answers first; both were waited for at once (neither blocks the other).
        second_tx.send(2).unwrap();
        first_tx.send(1).unwrap();
        assert_eq!(answers.await.unwrap(), [1, 2]);
        assert!(
            join_all(std::iter::empty::<std::future::Ready<()>>())
                .await
                .is_empty()
        );
    }
}

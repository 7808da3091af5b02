//! Interest management in the snapshot codec: an entity with a period of `n` is updated on
//! every `n`th snapshot and dead-reckoned in between, while near ones arrive every time.

use volley_sync::game::EntityView;
use volley_sync::snapshot::{Decoder, Encoder, Snapshot, SnapshotConfig};

fn entity(id: u16, t: u32) -> EntityView {
    // Erratic motion: the velocity changes every tick, so dead reckoning is always wrong.
    let wobble = ((t * 37 + u32::from(id) * 11) % 17) as i32 - 8;
    EntityView {
        id,
        kind: 1,
        x: 1000 + (t as i32) * 40 + wobble * 30,
        y: 2000 - (t as i32) * 25 + wobble * 20,
        vx: wobble * 3,
        vy: -wobble * 2,
        angle: (t % 256) as u8,
        health: 100,
        flags: 0,
    }
}

#[test]
fn far_entities_are_updated_every_nth_snapshot_and_near_ones_always() {
    let mut enc = Encoder::new(SnapshotConfig::default());
    let mut dec = Decoder::new(SnapshotConfig::default());
    let far = 1u16;
    let mut far_updates = Vec::new();
    for t in 1..=30u32 {
        let truth = Snapshot {
            tick: t,
            entities: vec![entity(0, t), entity(far, t)],
        }
        .quantized();
        let bytes = enc
            .encode_with_interest(&truth, 1200, |e| if e.id == far { 3 } else { 1 })
            .unwrap();
        let got = dec.decode(&bytes).unwrap();
        enc.on_ack(t);
        assert_eq!(
            got.entities[0], truth.entities[0],
            "near entity at tick {t}"
        );
        if got.entities[1] == truth.entities[1] {
            far_updates.push(t);
        }
    }
    // The first snapshot is full; from then on the far one is updated every third snapshot.
    assert_eq!(far_updates.first(), Some(&1));
    let gaps: Vec<u32> = far_updates.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 3), "updates at {far_updates:?}");
    assert!(far_updates.len() >= 9);
    assert_eq!(
        enc.stats().interest_deferred,
        2 * (far_updates.len() as u64 - 1) + 2
    );
}

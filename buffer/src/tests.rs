use super::*;

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.resize(len.max(4), (i % 251) as u8);
    p
}

fn drain(buf: &mut DiskBuffer) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(r) = buf.peek().expect("peek") {
        out.push(u32::from_le_bytes(
            r.payload[0..4].try_into().expect("4 bytes"),
        ));
        buf.ack().expect("ack");
    }
    out
}

#[test]
fn fifo_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut buf, _) = DiskBuffer::open(dir.path(), 1 << 20).expect("open");
    for i in 0..200 {
        let d = buf.append(10, &payload(i, 1000)).expect("append");
        assert_eq!(d, Dropped::default());
    }
    assert_eq!(buf.pending_records(), 200);
    assert_eq!(buf.pending_samples(), 2000);
    assert_eq!(drain(&mut buf), (0..200).collect::<Vec<_>>());
    assert!(buf.is_empty());
}

#[test]
fn survives_reopen_and_remembers_the_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut buf, _) = DiskBuffer::open(dir.path(), 1 << 20).expect("open");
        for i in 0..50 {
            buf.append(1, &payload(i, 3000)).expect("append");
        }
        for _ in 0..20 {
            buf.peek().expect("peek");
            buf.ack().expect("ack");
        }
    }
    let (mut buf, rec) = DiskBuffer::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!((rec.records, rec.samples, rec.truncated_bytes), (30, 30, 0));
    buf.append(1, &payload(50, 10))
        .expect("append after reopen");
    assert_eq!(drain(&mut buf), (20..51).collect::<Vec<_>>());
}

#[test]
fn full_buffer_drops_oldest_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 256 * 1024;
    let (mut buf, _) = DiskBuffer::open(dir.path(), cap).expect("open");
    let mut dropped = Dropped::default();
    for i in 0..200 {
        let d = buf.append(7, &payload(i, 4000)).expect("append");
        dropped.records += d.records;
        dropped.samples += d.samples;
        assert!(buf.disk_bytes() <= cap, "{} > {cap}", buf.disk_bytes());
    }
    let left = drain(&mut buf);
    assert!(dropped.records > 0);
    assert_eq!(dropped.records + left.len() as u64, 200);
    assert_eq!(dropped.samples, dropped.records * 7);
    // What is left is the newest data, in order.
    assert_eq!(left, (200 - left.len() as u32..200).collect::<Vec<_>>());
}

#[test]
fn a_record_larger_than_the_cap_is_dropped_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut buf, _) = DiskBuffer::open(dir.path(), 64 * 1024).expect("open");
    let d = buf.append(3, &vec![0u8; 100 * 1024]).expect("append");
    assert_eq!(
        d,
        Dropped {
            records: 1,
            samples: 3
        }
    );
    assert!(buf.is_empty());
    assert!(matches!(
        DiskBuffer::open(dir.path(), 10),
        Err(BufferError::TooSmall(10))
    ));
}

#[test]
fn torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut buf, _) = DiskBuffer::open(dir.path(), 1 << 20).expect("open");
        for i in 0..5 {
            buf.append(2, &payload(i, 100)).expect("append");
        }
    }
    let seg = fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open seg");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5])
        .expect("write torn record");
    drop(f);
    let (mut buf, rec) = DiskBuffer::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!((rec.records, rec.truncated_bytes), (5, 9));
    buf.append(2, &payload(5, 100)).expect("append");
    assert_eq!(drain(&mut buf), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn batches_come_out_in_order_and_ack_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut buf, _) = DiskBuffer::open(dir.path(), 1 << 20).expect("open");
    for i in 0..300 {
        buf.append(2, &payload(i, 500)).expect("append");
    }
    let mut seen = Vec::new();
    let mut unacked_once = false;
    loop {
        let batch = buf.peek_batch(40, 8 * 1024).expect("peek_batch");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 40);
        assert!(
            batch.len() == 1 || batch.iter().map(|r| r.payload.len()).sum::<usize>() <= 8 * 1024
        );
        if !unacked_once {
            // Not acknowledged: the same batch comes back.
            unacked_once = true;
            let again = buf.peek_batch(40, 8 * 1024).expect("peek again");
            assert_eq!(again, batch);
        }
        seen.extend(
            batch
                .iter()
                .map(|r| u32::from_le_bytes(r.payload[0..4].try_into().expect("4 bytes"))),
        );
        buf.ack_batch().expect("ack_batch");
    }
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    assert!(buf.is_empty());
    assert_eq!(buf.pending_samples(), 0);
    drop(buf);
    let (_, rec) = DiskBuffer::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(rec.records, 0, "the acked position was persisted");
}

#[test]
fn a_record_larger_than_the_batch_window_comes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut buf, _) = DiskBuffer::open(dir.path(), 1 << 20).expect("open");
    buf.append(1, &payload(0, 20_000)).expect("append");
    buf.append(1, &payload(1, 10)).expect("append");
    let b = buf.peek_batch(10, 1000).expect("peek");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].payload.len(), 20_000);
    buf.ack_batch().expect("ack");
    let b = buf.peek_batch(10, 1000).expect("peek");
    assert_eq!((b.len(), b[0].payload.len()), (1, 10));
}

//! Bounded waits: a device that stops answering (the emulated `hang` fault) fails the
//! requests that reach it within its timeout, with an error naming it, while the other
//! devices' requests complete with exact data; migrating or unregistering a buffer, and
//! closing the devices, finish in bounded time; the hung device's slots come back (its
//! commands are cancelled), so it works again once the fault is cleared. Also: a device
//! that answers short transfers has the rest resubmitted, and the data is exact.

use std::time::{Duration, Instant};

use stripefs_engine::{
    Completion, DeviceQueue, DeviceSpec, Error, IoContext, Op, Request, Volume, pattern,
};
use stripefs_layout::StripeUnit;
use stripefs_mapping::{Buffer, Mapping};

const UNIT: u64 = 64 << 10;
const DEVICES: u64 = 3;
const HUNG: usize = 1;
const SEED: u64 = 0x4a46;
const TIMEOUT: Duration = Duration::from_millis(300);
/// How late a timed-out request may fail: a scan period (timeout / 8) plus a loaded machine.
const SLACK: Duration = Duration::from_millis(700);

fn open(extra: &str) -> DeviceQueue {
    let spec: DeviceSpec = format!("emu:mem,size=8M,timeout=300ms{extra}")
        .parse()
        .expect("spec");
    DeviceQueue::open(&spec).expect("open")
}

/// A volume striped over three memory devices, holding the pattern everywhere, and a
/// mapping of a cleared 1 MiB buffer.
fn filled() -> (Volume, Buffer, Mapping) {
    let devices = (0..DEVICES).map(|_| open("")).collect();
    let volume = Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mut data = vec![0u8; 1 << 20];
    pattern::fill(SEED, 0, &mut data);
    buffer.write_at(0, &data).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    volume
        .write(&mapping, 0, 0, 1 << 20)
        .expect("write the pattern");
    buffer.write_at(0, &vec![0u8; 1 << 20]).expect("clear");
    (volume, buffer, mapping)
}

/// Which device (column) the stripe unit at volume offset `offset` is on.
fn column(offset: u64) -> usize {
    ((offset / UNIT) % DEVICES) as usize
}

fn read(mapping: &Mapping, unit: u64) -> Request<'_> {
    Request {
        op: Op::Read,
        mapping,
        offset: unit * UNIT,
        buffer_offset: unit * UNIT,
        len: UNIT,
        tag: unit,
    }
}

/// Checks that the buffer holds the pattern over unit `unit`.
fn assert_exact(buffer: &Buffer, unit: u64) {
    let mut got = vec![0u8; UNIT as usize];
    buffer.read_at(unit * UNIT, &mut got).expect("read buffer");
    assert_eq!(
        pattern::first_mismatch(SEED, unit * UNIT, &got),
        None,
        "unit {unit} (device {}) holds wrong data",
        column(unit * UNIT)
    );
}

/// Checks that a request on the hung device failed with a timeout naming it and its range.
fn assert_timed_out(c: &Completion, volume: &Volume) {
    let hung = volume.devices()[HUNG].name();
    match &c.result {
        Err(
            e @ Error::Timeout {
                device,
                op,
                offset,
                len,
                timeout,
            },
        ) => {
            assert_eq!(device, hung);
            assert_eq!(*op, Op::Read);
            assert_eq!(*len, UNIT);
            // Unit `tag` is the (tag / 3)th unit of its device.
            assert_eq!(*offset, c.tag / DEVICES * UNIT);
            assert_eq!(*timeout, TIMEOUT);
            let text = e.to_string();
            assert!(text.contains(hung), "`{text}` does not name {hung}");
            assert!(text.contains("timed out"), "`{text}`");
        }
        other => panic!("request {} on the hung device: {other:?}", c.tag),
    }
}

#[test]
fn a_hung_device_fails_its_requests_in_time_and_the_others_complete_exactly() {
    let (volume, buffer, mapping) = filled();
    volume.devices()[HUNG].faults().hang_after(0);
    let mut ctx = IoContext::new(16);
    let started = Instant::now();
    for unit in 0..16 {
        ctx.submit(&volume, read(&mapping, unit)).expect("submit");
    }
    let mut done = Vec::new();
    let mut finished = Vec::new();
    while ctx.in_flight() > 0 {
        ctx.wait(1, &mut done);
        for c in done.drain(..) {
            finished.push((c, started.elapsed()));
        }
    }
    let mut slowest_healthy = Duration::ZERO;
    for (c, at) in &finished {
        if column(c.tag * UNIT) == HUNG {
            assert_timed_out(c, &volume);
            assert!(*at >= TIMEOUT, "request {} failed early, at {at:?}", c.tag);
            assert!(
                *at < TIMEOUT + SLACK,
                "request {} failed late, at {at:?}",
                c.tag
            );
        } else {
            assert_eq!(c.result.as_ref().ok(), Some(&UNIT), "request {}", c.tag);
            assert_exact(&buffer, c.tag);
            slowest_healthy = slowest_healthy.max(*at);
        }
    }
    assert_eq!(finished.len(), 16);
    assert!(
        slowest_healthy < TIMEOUT,
        "healthy devices' requests waited for the hung one ({slowest_healthy:?})"
    );
    let stats = volume.devices()[HUNG].stats();
    // Units 1, 4, 7, 10 and 13 are on the hung device.
    assert_eq!(stats.timeouts, 5);
    println!(
        "hung device: 5 requests failed after {:?} (timeout {TIMEOUT:?}); healthy ones done by {slowest_healthy:?}",
        finished
            .iter()
            .filter(|(c, _)| c.result.is_err())
            .map(|(_, at)| *at)
            .max()
            .unwrap_or_default()
    );

    // The hung commands were cancelled and gave their slots back: once the device answers
    // again, it serves every unit with exact data.
    volume.devices()[HUNG].faults().clear();
    buffer.write_at(0, &vec![0u8; 1 << 20]).expect("clear");
    volume
        .read(&mapping, 0, 0, 1 << 20)
        .expect("read after the fault");
    for unit in 0..16 {
        assert_exact(&buffer, unit);
    }
}

/// Starts a read on the hung device (unit 1) from a context that is then left alone.
fn pending_on_hung(volume: &Volume, mapping: &Mapping) -> IoContext {
    volume.devices()[HUNG].faults().hang_after(0);
    let mut ctx = IoContext::new(2);
    ctx.submit(volume, read(mapping, 1)).expect("submit");
    ctx
}

fn collect_timeout(ctx: &mut IoContext, volume: &Volume) {
    let c = ctx.wait_one().expect("the request comes back");
    assert_timed_out(&c, volume);
}

#[test]
fn migrating_a_buffer_with_io_on_a_hung_device_ends_in_bounded_time() {
    let (volume, buffer, mapping) = filled();
    let mut ctx = pending_on_hung(&volume, &mapping);
    let started = Instant::now();
    buffer.migrate().expect("migrate");
    let took = started.elapsed();
    println!("migrate with a hung device: {took:?}");
    assert!(took < TIMEOUT + SLACK, "migrate took {took:?}");
    collect_timeout(&mut ctx, &volume);
    // The mapping maps again on the new pages: the healthy devices serve it exactly.
    volume
        .read(&mapping, 0, 0, UNIT)
        .expect("read after migrate");
    assert_exact(&buffer, 0);
}

#[test]
fn unregistering_with_io_on_a_hung_device_ends_in_bounded_time() {
    let (volume, _buffer, mapping) = filled();
    let mut ctx = pending_on_hung(&volume, &mapping);
    let started = Instant::now();
    volume.unregister(&mapping).expect("unregister");
    let took = started.elapsed();
    println!("unregister with a hung device: {took:?}");
    assert!(took < TIMEOUT + SLACK, "unregister took {took:?}");
    collect_timeout(&mut ctx, &volume);
    assert!(volume.read(&mapping, 0, 0, UNIT).is_err());
}

#[test]
fn closing_a_hung_device_ends_in_bounded_time() {
    let (volume, _buffer, mapping) = filled();
    let mut ctx = pending_on_hung(&volume, &mapping);
    let names: Vec<String> = volume.devices().iter().map(|d| d.name().into()).collect();
    let started = Instant::now();
    drop(volume);
    let took = started.elapsed();
    println!("closing a volume with a hung device: {took:?}");
    assert!(took < TIMEOUT + SLACK, "closing took {took:?}");
    let c = ctx.wait_one().expect("the request comes back");
    match c.result {
        Err(Error::Timeout { device, .. }) => assert_eq!(device, names[HUNG]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn more_hung_commands_than_the_queue_holds_all_time_out() {
    // qd=4 and 12 commands: submitting waits for slots, which come back only when hung
    // commands time out and their cancellations complete.
    let device = open(",hang=0,mdts=16K,qd=4");
    let name = device.name().to_string();
    let volume = Volume::raw(device).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let started = Instant::now();
    let e = volume
        .read(&mapping, 0, 0, 192 << 10)
        .expect_err("a hung read");
    let took = started.elapsed();
    println!("12 commands on a hung device with 4 slots: failed after {took:?}");
    assert!(
        matches!(&e, Error::Timeout { device, .. } if *device == name),
        "{e}"
    );
    assert!(took >= TIMEOUT, "{took:?}");
    assert!(took < 3 * (TIMEOUT + SLACK), "{took:?}");
    assert_eq!(volume.devices()[0].stats().timeouts, 12);
}

#[test]
fn short_transfers_are_resubmitted_for_the_rest_with_exact_data() {
    // Every command moves at most 4 KiB and answers short; 128 KiB commands take 32 trips.
    let devices = (0..2).map(|_| open(",short=4K")).collect();
    let volume = Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mut want = vec![0u8; 1 << 20];
    pattern::fill(SEED + 1, 0, &mut want);
    buffer.write_at(0, &want).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    assert_eq!(volume.write(&mapping, 4096, 0, 1 << 20).ok(), Some(1 << 20));
    buffer.write_at(0, &vec![0u8; 1 << 20]).expect("clear");
    assert_eq!(volume.read(&mapping, 4096, 0, 1 << 20).ok(), Some(1 << 20));
    let mut got = vec![0u8; 1 << 20];
    buffer.read_at(0, &mut got).expect("read buffer");
    assert_eq!(pattern::first_mismatch(SEED + 1, 0, &got), None);
    for d in volume.devices() {
        let stats = d.stats();
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.bytes_read, 512 << 10);
        assert_eq!(stats.bytes_written, 512 << 10);
        // 512 KiB each way in 4 KiB trips: 128 trips per direction, less one per command.
        assert_eq!(
            stats.resubmitted,
            2 * 128 - stats.reads - stats.writes,
            "{stats:?}"
        );
    }
}

#[test]
fn a_timed_out_command_keeps_its_slot_until_the_device_answers() {
    // One slot; the device answers after 600 ms, the timeout is 100 ms. The first read fails
    // at the timeout, but its command still holds the only slot until the answer comes (the
    // kernel may still be using its buffer), so the second read cannot start before then.
    let spec: DeviceSpec = "emu:mem,size=8M,qd=1,lat=600ms,timeout=100ms"
        .parse()
        .expect("spec");
    let volume = Volume::raw(DeviceQueue::open(&spec).expect("open")).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let started = Instant::now();
    let first = volume.read(&mapping, 0, 0, 4096);
    let first_at = started.elapsed();
    let second = volume.read(&mapping, 4096, 4096, 4096);
    let second_at = started.elapsed();
    println!(
        "one slot, answers after 600 ms, timeout 100 ms: failed at {first_at:?} and {second_at:?}"
    );
    assert!(
        matches!(first, Err(Error::Timeout { offset: 0, .. })),
        "{first:?}"
    );
    assert!(first_at >= Duration::from_millis(100), "{first_at:?}");
    assert!(
        first_at < Duration::from_millis(100) + SLACK,
        "{first_at:?}"
    );
    assert!(
        matches!(second, Err(Error::Timeout { offset: 4096, .. })),
        "{second:?}"
    );
    assert!(
        second_at >= Duration::from_millis(600),
        "the second command got the slot at {second_at:?}, before the first was answered"
    );
    assert_eq!(volume.devices()[0].stats().timeouts, 2);
}

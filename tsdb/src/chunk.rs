//! The head's appendable chunk: Gorilla encoding (Pelkonen et al., "Gorilla: A Fast,
//! Scalable, In-Memory Time Series Database", VLDB 2015), as Prometheus' `chunkenc` uses it.
//!
//! Timestamps are stored as delta-of-delta in variable-width buckets (one bit when the
//! interval is steady); values as the XOR with the previous value, storing only the
//! meaningful bits (one bit when the value repeats). Regular scrapes cost one to two bytes
//! per sample.
//!
//! The encoder is ours: the one Rust crate for it (`tsz`) has had no release since 2018
//! and cannot read an open chunk, which the head must do on every query. Sealed data is
//! re-encoded with `pco` by [`super::block`], which compresses whole columns far better.
//!
//! Invariants: samples are appended in strictly increasing timestamp order (the head keeps
//! out-of-order samples apart); the chunk can be read at any time, including while open.

use nunchi_model::Sample;

/// A compressed, appendable run of samples of one series.
#[derive(Debug, Default, Clone)]
pub struct XorChunk {
    bytes: Vec<u8>,
    /// Bits used in `bytes`.
    bits: u32,
    count: u32,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
    /// Whether `leading`/`trailing` hold a window from an earlier value.
    has_window: bool,
}

struct BitWriter<'a> {
    bytes: &'a mut Vec<u8>,
    bits: &'a mut u32,
}

impl BitWriter<'_> {
    fn write(&mut self, value: u64, n: u32) {
        let mut remaining = n;
        while remaining > 0 {
            let used = *self.bits % 8;
            if used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - used;
            let take = free.min(remaining);
            let shift = remaining - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << (free - take);
            }
            *self.bits += take;
            remaining -= take;
        }
    }

    fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u32,
    end: u32,
}

impl BitReader<'_> {
    fn read(&mut self, n: u32) -> Option<u64> {
        if self.pos + n > self.end {
            return None;
        }
        let mut out = 0u64;
        let mut remaining = n;
        while remaining > 0 {
            let byte = self.bytes[(self.pos / 8) as usize];
            let used = self.pos % 8;
            let avail = 8 - used;
            let take = avail.min(remaining);
            let chunk = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            out = (out << take) | u64::from(chunk);
            self.pos += take;
            remaining -= take;
        }
        Some(out)
    }

    fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }
}

/// Delta-of-delta buckets: (prefix bits, prefix length, value bits).
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u32) -> bool {
    let lim = 1i64 << (bits - 1);
    -lim < v && v <= lim
}

impl XorChunk {
    /// Number of samples in the chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the last sample, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        (self.count > 0).then_some(self.last_t)
    }

    /// Appends a sample. The caller guarantees `t` is greater than the last timestamp.
    pub fn append(&mut self, t: i64, v: f64) {
        let vb = v.to_bits();
        let mut w = BitWriter {
            bytes: &mut self.bytes,
            bits: &mut self.bits,
        };
        if self.count == 0 {
            w.write(t as u64, 64);
            w.write(vb, 64);
            self.last_t = t;
            self.last_v = vb;
            self.count = 1;
            return;
        }
        let delta = t - self.last_t;
        let dod = delta - self.last_delta;
        if dod == 0 {
            w.bit(false);
        } else if let Some(&(prefix, plen, bits)) =
            DOD_BUCKETS.iter().find(|(_, _, bits)| fits(dod, *bits))
        {
            w.write(prefix, plen);
            w.write(dod as u64 & ((1u64 << bits) - 1), bits);
        } else {
            w.write(0b1111, 4);
            w.write(dod as u64, 64);
        }
        let x = vb ^ self.last_v;
        if x == 0 {
            w.bit(false);
        } else {
            w.bit(true);
            let leading = (x.leading_zeros() as u8).min(31);
            let trailing = x.trailing_zeros() as u8;
            if self.has_window && leading >= self.leading && trailing >= self.trailing {
                w.bit(false);
                let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
                w.write(x >> self.trailing, sig);
            } else {
                w.bit(true);
                let sig = 64 - u32::from(leading) - u32::from(trailing);
                w.write(u64::from(leading), 5);
                // A 64-bit significant part is written as 0: it cannot be 0 otherwise.
                w.write(u64::from(sig) & 63, 6);
                w.write(x >> trailing, sig);
                self.leading = leading;
                self.trailing = trailing;
                self.has_window = true;
            }
        }
        self.last_t = t;
        self.last_delta = delta;
        self.last_v = vb;
        self.count += 1;
    }

    /// Releases spare capacity (for a chunk that will not grow any more).
    pub fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
    }

    /// Iterates the samples in order.
    pub fn iter(&self) -> XorIter<'_> {
        XorIter {
            r: BitReader {
                bytes: &self.bytes,
                pos: 0,
                end: self.bits,
            },
            left: self.count,
            first: true,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    /// Appends the samples with `mint <= t <= maxt` to `out`.
    pub fn read_into(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
        if self.count == 0 || self.last_t < mint {
            return;
        }
        for s in self.iter() {
            if s.timestamp_ms > maxt {
                break;
            }
            if s.timestamp_ms >= mint {
                out.push(s);
            }
        }
    }
}

/// Iterator over an [`XorChunk`].
pub struct XorIter<'a> {
    r: BitReader<'a>,
    left: u32,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    trailing: u32,
}

impl XorIter<'_> {
    fn step(&mut self) -> Option<Sample> {
        if self.first {
            self.first = false;
            self.t = self.r.read(64)? as i64;
            self.v = self.r.read(64)?;
        } else {
            let dod = if !self.r.bit()? {
                0
            } else if !self.r.bit()? {
                sign_extend(self.r.read(14)?, 14)
            } else if !self.r.bit()? {
                sign_extend(self.r.read(17)?, 17)
            } else if !self.r.bit()? {
                sign_extend(self.r.read(20)?, 20)
            } else {
                self.r.read(64)? as i64
            };
            self.delta += dod;
            self.t += self.delta;
            if self.r.bit()? {
                if self.r.bit()? {
                    self.leading = self.r.read(5)? as u32;
                    let mut sig = self.r.read(6)? as u32;
                    if sig == 0 {
                        sig = 64;
                    }
                    self.trailing = 64 - self.leading - sig;
                }
                let sig = 64 - self.leading - self.trailing;
                let x = self.r.read(sig)? << self.trailing;
                self.v ^= x;
            }
        }
        Some(Sample {
            timestamp_ms: self.t,
            value: f64::from_bits(self.v),
        })
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    let x = ((v << shift) as i64) >> shift;
    // Buckets hold (-2^(n-1), 2^(n-1)]: the top value wraps to the most negative pattern.
    if x == -(1i64 << (bits - 1)) { -x } else { x }
}

impl Iterator for XorIter<'_> {
    type Item = Sample;
    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::default();
        for &(t, v) in samples {
            c.append(t, v);
        }
        let back: Vec<(i64, u64)> = c
            .iter()
            .map(|s| (s.timestamp_ms, s.value.to_bits()))
            .collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(back, want);
        c
    }

    #[test]
    fn steady_scrape_costs_about_two_bits_per_repeated_sample() {
        let s: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, 42.0))
            .collect();
        let c = roundtrip(&s);
        assert!(c.bits < 16 * 8 + 17 + 2 + 118 * 2 + 8, "{} bits", c.bits);
    }

    #[test]
    fn every_kind_of_value_and_jump_round_trips() {
        let mut s = Vec::new();
        let mut t = -5_000i64;
        let values = [
            0.0,
            -0.0,
            1.5,
            f64::NAN,
            nunchi_model::stale_nan(),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            12345.67,
            12345.68,
            -1e300,
        ];
        let gaps = [
            1,
            15_000,
            15_001,
            8_192,
            8_193,
            65_536,
            65_537,
            524_288,
            524_289,
            1 << 40,
        ];
        for (i, v) in values.iter().cycle().take(200).enumerate() {
            t += gaps[i % gaps.len()];
            s.push((t, *v));
        }
        roundtrip(&s);
    }

    #[test]
    fn counter_values_round_trip() {
        let mut v = 100.0;
        let s: Vec<(i64, f64)> = (0..500)
            .map(|i| {
                v += (i % 7) as f64 * 0.01 + 0.5;
                (i * 1000 + (i % 3), v)
            })
            .collect();
        roundtrip(&s);
    }

    #[test]
    fn read_into_filters_by_time() {
        let c = roundtrip(&[(10, 1.0), (20, 2.0), (30, 3.0)]);
        let mut out = Vec::new();
        c.read_into(15, 30, &mut out);
        assert_eq!(
            out.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            [20, 30]
        );
    }
}

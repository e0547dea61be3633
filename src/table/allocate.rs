//! `--auto-allocate istio-legacy`: the VIPs Istio 1.17–1.24 gives ServiceEntries without
//! addresses, reproduced bit for bit so that the DNS answer is the address the sidecar routes.
//!
//! From istio/istio `pilot/pkg/serviceregistry/serviceentry/controller.go`, `autoAllocateIPs`:
//! - services are taken in Istio's order (creation time, then host, then namespace), one per
//!   host of each eligible entry: no `spec.addresses` at all, host not a wildcard,
//!   resolution not NONE — whatever the zones served or `exportTo`, since istiod counts them all;
//! - each key `namespace + "/" + host` is hashed with 32-bit FNV-1a into 256 × 254 = 65024
//!   slots; a taken slot is resolved by double hashing, probing
//!   `(h + i·(65011 − h mod 65011)) mod 65023` in wrapping 32-bit arithmetic, as Go computes it;
//! - the slots are walked in order with a counter `x` that skips multiples of 255, giving
//!   `240.240.(x / 255).(x mod 255)` and `2001:2::f0f0:` followed by the hex of the two octets
//!   without padding (just the fourth when the third is 0) — Istio's own formatting;
//! - a key seen twice reuses its first pair.
//!
//! Where Istio would loop forever (a probe sequence that never finds a free slot) this gives
//! up on that service instead, once every step Go's uint32 counter can take has been tried.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Slots, `maxIPs` in Istio.
pub(super) const SLOTS: usize = 256 * 254;
/// Prime of the second hash.
pub(super) const PRIME: u32 = 65011;

/// 32-bit FNV-1a.
pub(super) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// The addresses of one octet pair.
pub(super) fn addresses(third: u32, fourth: u32) -> (Ipv4Addr, Ipv6Addr) {
    let v4 = Ipv4Addr::new(240, 240, third as u8, fourth as u8);
    let text = if third == 0 {
        format!("2001:2::f0f0:{fourth:x}")
    } else {
        format!("2001:2::f0f0:{third:x}{fourth:x}")
    };
    let v6 = text.parse().expect("at most four hex digits form one group");
    (v4, v6)
}

/// Allocates for `keys` (`namespace/host`, in Istio's order); returns each key's addresses.
pub(super) fn allocate<'a>(keys: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, (Ipv4Addr, Ipv6Addr)> {
    let mut slots: Vec<Option<&'a str>> = vec![None; SLOTS];
    for (placed, key) in keys.into_iter().enumerate() {
        if placed >= SLOTS {
            tracing::warn!("more than {SLOTS} ServiceEntry hosts to allocate: Istio allocates no more either");
            break;
        }
        let h = fnv1a(key.as_bytes());
        let first = (h % SLOTS as u32) as usize;
        if slots[first].is_none() {
            slots[first] = Some(key);
            continue;
        }
        let step = PRIME - h % PRIME;
        // Go's `i` is a uint32 and `h + i*step` wraps at 2^32, which is not a multiple of
        // 65023, so the sequence is not periodic in the slots: a full table needs up to ~400k
        // steps. Every i a uint32 can hold covers all Go could ever reach.
        let free = (1..=u32::MAX)
            .map(|i| (h.wrapping_add(i.wrapping_mul(step)) % (SLOTS as u32 - 1)) as usize)
            .find(|&slot| slots[slot].is_none());
        match free {
            Some(slot) => slots[slot] = Some(key),
            None => tracing::warn!(key, "no free slot on this key's probe sequence: not allocated"),
        }
    }
    let mut out = HashMap::new();
    let mut x = 0u32;
    for key in slots {
        x += 1;
        let Some(key) = key else { continue };
        if x.is_multiple_of(255) {
            x += 1;
        }
        out.entry(key).or_insert_with(|| addresses(x / 255, x % 255));
    }
    out
}

#[cfg(test)]
mod tests;

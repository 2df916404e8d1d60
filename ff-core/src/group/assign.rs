//! Leaderless assignment: rendezvous hashing with bounded loads.
//!
//! Every member computes [`assign`] from the same live member list and
//! gets the same answer, so no leader is needed. Each unit goes to the
//! member that ranks highest for it by [`rendezvous_score`] among those
//! below the cap ⌈U/N⌉, so no member holds more than its fair share
//! rounded up. Units are placed in a fixed order (by their own hash), so a
//! join or leave moves about the minimum: the units whose top choices
//! changed, plus few displaced by the cap.

/// A stable 64-bit score of `member` for `unit` (FNV-1a, then a
/// SplitMix64 finaliser), the same on every platform and version.
pub fn rendezvous_score(member: &str, unit: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0xff]).chain(unit.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The owner of each unit `0..units` among `members` (indices into
/// `members`); `None` for every unit when there are no members. Members
/// are identified by their text, so the order of `members` does not
/// matter.
pub fn assign(units: u32, members: &[&str]) -> Vec<Option<usize>> {
    let n = members.len();
    if n == 0 {
        return vec![None; units as usize];
    }
    let cap = (units as usize).div_ceil(n);
    let mut order: Vec<u32> = (0..units).collect();
    order.sort_by_key(|u| (mix(u64::from(*u) ^ 0x5bd1_e995), *u));
    let mut load = vec![0usize; n];
    let mut owner = vec![None; units as usize];
    let mut ranked: Vec<(u64, &str, usize)> = Vec::with_capacity(n);
    for unit in order {
        ranked.clear();
        ranked.extend(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (rendezvous_score(m, unit), *m, i)),
        );
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        if let Some(&(_, _, i)) = ranked.iter().find(|(_, _, i)| load[*i] < cap) {
            load[i] += 1;
            owner[unit as usize] = Some(i);
        }
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("member-{i}#abcd{i}")).collect()
    }

    fn owners(units: u32, members: &[String]) -> Vec<String> {
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        assign(units, &refs)
            .into_iter()
            .map(|o| members[o.unwrap()].clone())
            .collect()
    }

    fn moved(a: &[String], b: &[String]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn no_member_holds_more_than_its_share_rounded_up() {
        for units in [1u32, 5, 16, 64, 256] {
            for n in 1..=9 {
                let members = names(n);
                let owners = owners(units, &members);
                let cap = (units as usize).div_ceil(n);
                for m in &members {
                    let load = owners.iter().filter(|o| *o == m).count();
                    assert!(
                        load <= cap,
                        "{units} units, {n} members: {m} holds {load} > {cap}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_order_of_the_member_list_does_not_matter() {
        let members = names(5);
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(owners(64, &members), owners(64, &reversed));
    }

    #[test]
    fn a_join_or_leave_moves_about_the_minimum() {
        for units in [16u32, 64, 256] {
            for n in 2..=8 {
                let before = names(n);
                let after: Vec<String> = names(n + 1);
                let a = owners(units, &before);
                let b = owners(units, &after);
                // The newcomer's fair share must move; allow as much again
                // for units displaced by the cap.
                let share = (units as usize).div_ceil(n + 1);
                let join = moved(&a, &b);
                assert!(
                    join <= 2 * share + 1,
                    "{units} units, {n} -> {} members: {join} moved, fair share {share}",
                    n + 1
                );
                // A leave: the leaver's units must move, and few others.
                let leaver = &after[0];
                let left: Vec<String> = after[1..].to_vec();
                let c = owners(units, &left);
                let held = b.iter().filter(|o| *o == leaver).count();
                let leave = moved(&b, &c);
                assert!(
                    leave <= held + share + 1,
                    "{units} units, {} -> {n} members: {leave} moved, leaver held {held}",
                    n + 1
                );
            }
        }
    }
}

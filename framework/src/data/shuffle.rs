//! tf.data's shuffle buffer, which DeepReg applies to training samples.

/// Reorders `items` as `tf.data.Dataset.shuffle(buffer_size)` does: the buffer is filled with
/// the first `buffer_size` items; each output is a uniformly chosen buffer element, replaced
/// by the next input item. A buffer of 0 or 1 keeps the order. `next_random(n)` must return a
/// uniform index below `n` (a seeded generator makes the order reproducible).
pub fn shuffle_buffer<T>(
    items: Vec<T>,
    buffer_size: usize,
    mut next_random: impl FnMut(usize) -> usize,
) -> Vec<T> {
    if buffer_size <= 1 {
        return items;
    }
    let mut input = items.into_iter();
    let mut buffer: Vec<T> = input.by_ref().take(buffer_size).collect();
    let mut output = Vec::with_capacity(buffer.len() + input.len());
    while !buffer.is_empty() {
        let pick = next_random(buffer.len()).min(buffer.len() - 1);
        match input.next() {
            Some(next) => output.push(std::mem::replace(&mut buffer[pick], next)),
            None => output.push(buffer.swap_remove(pick)),
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % n
        }
    }

    #[test]
    fn keeps_every_item_once() {
        let shuffled = shuffle_buffer((0..100).collect(), 8, lcg(1));
        let mut sorted = shuffled.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(shuffled, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_small_buffer_only_moves_items_locally() {
        // Item i can only leave the buffer after it entered: at output position ≥ i − size + 1.
        let size = 4;
        let shuffled = shuffle_buffer((0..50).collect::<Vec<usize>>(), size, lcg(7));
        for (position, item) in shuffled.iter().enumerate() {
            assert!(position + size > *item, "{item} came out at {position}");
        }
    }

    #[test]
    fn no_buffer_keeps_the_order_and_seeds_reproduce() {
        assert_eq!(shuffle_buffer(vec![3, 1, 2], 0, lcg(1)), vec![3, 1, 2]);
        assert_eq!(shuffle_buffer(vec![3, 1, 2], 1, lcg(1)), vec![3, 1, 2]);
        let a = shuffle_buffer((0..20).collect::<Vec<_>>(), 5, lcg(3));
        let b = shuffle_buffer((0..20).collect::<Vec<_>>(), 5, lcg(3));
        assert_eq!(a, b);
    }
}

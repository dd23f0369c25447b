//! Series storage whose slots can be released and reused. Keys stay plain
//! indexes, so recording is still an index into a vector; a released slot
//! records nothing until it is handed out again.

/// Items at stable `u32` indexes, with freed indexes reused first.
#[derive(Debug, Clone)]
pub(super) struct Slots<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Store `item` in a freed slot or a new one; None past `u32::MAX - 1`
    /// slots (the caller's key then records nothing).
    pub fn insert(&mut self, item: T) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            if let Some(slot) = self.items.get_mut(i as usize) {
                *slot = Some(item);
                return Some(i);
            }
        }
        let i = u32::try_from(self.items.len()).ok().filter(|&i| i != u32::MAX)?;
        self.items.push(Some(item));
        Some(i)
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i).and_then(Option::as_mut)
    }

    /// The items in use, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flatten()
    }

    /// The items in use with their indices.
    pub fn indexed(&self) -> impl Iterator<Item = (usize, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| Some((i, item.as_ref()?)))
    }

    /// Release every item whose index is not in `kept`, handing each to
    /// `released` (to forget its labels) before its slot is freed.
    pub fn retain(&mut self, kept: impl IntoIterator<Item = usize>, mut released: impl FnMut(T)) {
        let mut keep = vec![false; self.items.len()];
        for i in kept {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
        for (i, slot) in self.items.iter_mut().enumerate() {
            if keep[i] {
                continue;
            }
            if let Some(item) = slot.take() {
                released(item);
                // i < items.len() <= u32::MAX by `insert`.
                self.free.push(i as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_slots_are_reused_and_read_as_empty() {
        let mut slots = Slots::default();
        let (a, b, c) = (slots.insert("a"), slots.insert("b"), slots.insert("c"));
        assert_eq!((a, b, c), (Some(0), Some(1), Some(2)));
        let mut gone = Vec::new();
        slots.retain([0, 2, 99], |item| gone.push(item));
        assert_eq!(gone, ["b"], "out-of-range kept indexes are ignored");
        assert_eq!(slots.get(1), None);
        assert_eq!(slots.get_mut(1), None);
        assert_eq!(slots.iter().copied().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(slots.insert("d"), Some(1), "the freed slot first");
        assert_eq!(slots.insert("e"), Some(3));
        assert_eq!(slots.iter().copied().collect::<Vec<_>>(), ["a", "d", "c", "e"]);
    }
}

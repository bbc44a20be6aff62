/// An unordered list of objects, each of which keeps its index in the list (its slot): adding and
/// removing are O(1), with no hashing, and removal swaps the last object into the freed slot.
/// Walking `items` walks a copy, so the walk may remove objects. Used for what a loop checks on a
/// timer: the connections of ``LoopConnections`` and the deadlines of the splice plane's loops.
struct SlotList<Element> {
    private(set) var items: [Element] = []
    /// Where an element keeps its slot (-1 while in no list).
    private let slot: ReferenceWritableKeyPath<Element, Int>

    init(slot: ReferenceWritableKeyPath<Element, Int>) {
        self.slot = slot
    }

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }

    /// Adds `item`; does nothing if it is in a list already.
    mutating func insert(_ item: Element) {
        guard item[keyPath: slot] < 0 else { return }
        item[keyPath: slot] = items.count
        items.append(item)
    }

    /// Removes `item`; does nothing if it is not in this list.
    mutating func remove(_ item: Element) {
        let index = item[keyPath: slot]
        guard index >= 0, index < items.count, items[index] as AnyObject === item as AnyObject else { return }
        let last = items.removeLast()
        if last as AnyObject !== item as AnyObject {
            items[index] = last
            last[keyPath: slot] = index
        }
        item[keyPath: slot] = -1
    }
}

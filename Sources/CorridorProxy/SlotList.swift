/// An unordered list of objects, each of which keeps its index in the list (its slot): adding and
/// removing are O(1), with no hashing, and removal swaps the last object into the freed slot.
/// Walking `items` walks a copy, so the walk may remove objects. Used for what a loop checks on a
/// timer: the connections of ``LoopConnections`` and the deadlines of the splice plane's loops.
///
/// The slot is read and written through two closures rather than a key path: a key path goes
/// through the runtime's generic projection (and a write-back buffer for a reference-writable one)
/// on every insert and removal, which showed in the splice plane's profile per connection.
struct SlotList<Element> {
    private(set) var items: [Element] = []
    private let slotOf: (Element) -> Int
    private let setSlot: (Element, Int) -> Void

    /// `slot` reads where an element keeps its slot (-1 while in no list); `setSlot` writes it.
    init(slot: @escaping (Element) -> Int, setSlot: @escaping (Element, Int) -> Void) {
        self.slotOf = slot
        self.setSlot = setSlot
    }

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }

    /// Adds `item`; does nothing if it is in a list already.
    mutating func insert(_ item: Element) {
        guard slotOf(item) < 0 else { return }
        setSlot(item, items.count)
        items.append(item)
    }

    /// Removes `item`; does nothing if it is not in this list.
    mutating func remove(_ item: Element) {
        let index = slotOf(item)
        guard index >= 0, index < items.count, items[index] as AnyObject === item as AnyObject else { return }
        let last = items.removeLast()
        if last as AnyObject !== item as AnyObject {
            items[index] = last
            setSlot(last, index)
        }
        setSlot(item, -1)
    }
}

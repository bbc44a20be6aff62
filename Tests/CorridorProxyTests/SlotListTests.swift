import Testing

@testable import CorridorProxy

/// The list behind the idle sweeper and the splice loops' deadlines: O(1) insert and remove, each
/// object knowing its slot.
@Suite struct SlotListTests {
    private final class Item {
        var slot = -1
    }

    @Test func insertRemoveAndSlotsStayConsistent() {
        var list = SlotList<Item>(slot: { $0.slot }, setSlot: { $0.slot = $1 })
        let items = (0..<6).map { _ in Item() }
        for item in items { list.insert(item) }
        list.insert(items[3])
        #expect(list.count == 6, "inserting a listed object again changes nothing")
        for index in [0, 5, 2] { list.remove(items[index]) }
        list.remove(items[2])
        #expect(list.count == 3, "removing an unlisted object changes nothing")
        #expect(Set(list.items.map(ObjectIdentifier.init)) == Set([1, 3, 4].map { ObjectIdentifier(items[$0]) }))
        for (index, item) in list.items.enumerated() { #expect(item.slot == index) }
        #expect([0, 2, 5].allSatisfy { items[$0].slot == -1 })
        // An object in another list (its slot points into that one) is not taken out of this one.
        var other = SlotList<Item>(slot: { $0.slot }, setSlot: { $0.slot = $1 })
        let stranger = Item()
        other.insert(stranger)
        list.remove(stranger)
        #expect(list.count == 3 && stranger.slot == 0)
    }
}

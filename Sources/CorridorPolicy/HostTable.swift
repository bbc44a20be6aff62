/// An open-addressing hash table from host-name bytes to a 32-bit payload whose meaning belongs to
/// the owner: the storage under ``HostIndex`` and the snapshot's service index.
///
/// Built for lookups from cold memory: one control byte per slot (0 for empty, else 7 bits of the
/// key's hash) in a dense array small enough to stay in cache, so most probes for a name that is
/// not there touch nothing else; only when the control byte matches is the slot read (16 bytes: the
/// whole hash, where the key is, the payload) and, when the hash matches too, the key (its length
/// and bytes, side by side). Keys are compared byte for byte (names and patterns are normalised
/// lower-case ASCII before they get here). The hash runs over the bytes from the last to the first,
/// so one pass over a name yields the hash of every suffix after a dot (see ``HostMatch``).
struct HostTable: Sendable {
    private struct Slot {
        /// The key's hash (kept whole so that growing never rehashes the bytes).
        var hash: UInt64
        /// Where the key starts in `bytes`: its length (4 bytes, little-endian), then its bytes.
        var offset: UInt32
        var payload: UInt32
    }

    /// By slot: 0 when empty, else 0x80 | the top 7 bits of the key's hash.
    private var control: [UInt8] = []
    /// Empty, or a power of two of slots, never more than half full.
    private var slots: [Slot] = []
    /// Every key's length and bytes, one after the other.
    private var bytes: [UInt8] = []
    private(set) var count = 0

    init() {}

    /// Hash of `key`: FNV-1a over the bytes from the last to the first, then a finaliser.
    /// Hashing backwards lets ``HostMatch`` hash every suffix of a name in one pass.
    static func hash(_ key: Span<UInt8>) -> UInt64 {
        var state = hashSeed
        var position = key.count
        while position > 0 {
            position -= 1
            state = step(state, key[position])
        }
        return finish(state)
    }

    static func step(_ state: UInt64, _ byte: UInt8) -> UInt64 { (state ^ UInt64(byte)) &* hashPrime }

    /// The payload stored under the key `name[start...]` whose hash is `hash`, or nil.
    func find(_ name: Span<UInt8>, from start: Int, hash: UInt64) -> UInt32? {
        if count == 0 { return nil }
        let control = self.control.span
        let slots = self.slots.span
        let mark = Self.mark(hash)
        let length = name.count - start
        let mask = slots.count - 1
        var position = Int(truncatingIfNeeded: hash) & mask
        while true {
            let byte = control[position]
            if byte == 0 { return nil }
            if byte == mark {
                let slot = slots[position]
                if slot.hash == hash, keyEquals(slot, name, from: start, length: length) { return slot.payload }
            }
            position = (position + 1) & mask
        }
    }

    /// The payload under `key`, inserting `newPayload` under it first if it is not there.
    /// Returns the payload and whether it was inserted.
    @discardableResult
    mutating func insert(_ key: String, payload newPayload: UInt32) -> (payload: UInt32, inserted: Bool) {
        insert(key, hash: Self.hash(key.utf8.span), payload: newPayload)
    }

    /// `insert` with the hash given: tests use it to make keys collide.
    @discardableResult
    mutating func insert(_ key: String, hash: UInt64, payload newPayload: UInt32) -> (payload: UInt32, inserted: Bool) {
        if let existing = find(key.utf8.span, from: 0, hash: hash) { return (existing, false) }
        if (count + 1) * 2 > slots.count { grow() }
        let length = key.utf8.count
        guard bytes.count + 4 + length <= Int(UInt32.max) else { preconditionFailure("HostTable: more than 4 GiB of host names") }
        let slot = Slot(hash: hash, offset: UInt32(bytes.count), payload: newPayload)
        withUnsafeBytes(of: UInt32(length).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: key.utf8)
        place(slot, hash: hash)
        count += 1
        return (newPayload, true)
    }

    /// Whether the slot's key is `name[start...]`, `length` bytes.
    private func keyEquals(_ slot: Slot, _ name: Span<UInt8>, from start: Int, length: Int) -> Bool {
        let stored = bytes.span
        let storedLength = UInt32(littleEndian: stored.bytes.unsafeLoadUnaligned(fromByteOffset: Int(slot.offset), as: UInt32.self))
        guard Int(storedLength) == length else { return false }
        let offset = Int(slot.offset) + 4
        var position = 0
        while position + 8 <= length {  // eight bytes at a time
            let word = stored.bytes.unsafeLoadUnaligned(fromByteOffset: offset + position, as: UInt64.self)
            if word != name.bytes.unsafeLoadUnaligned(fromByteOffset: start + position, as: UInt64.self) { return false }
            position += 8
        }
        while position < length {
            if stored[offset + position] != name[start + position] { return false }
            position += 1
        }
        return true
    }

    private mutating func place(_ slot: Slot, hash: UInt64) {
        let mask = slots.count - 1
        var position = Int(truncatingIfNeeded: hash) & mask
        while control[position] != 0 { position = (position + 1) & mask }
        control[position] = Self.mark(hash)
        slots[position] = slot
    }

    private mutating func grow() {
        let old = zip(control, slots).filter { $0.0 != 0 }.map(\.1)
        let size = max(16, slots.count * 2)
        control = Array(repeating: 0, count: size)
        slots = Array(repeating: Slot(hash: 0, offset: 0, payload: 0), count: size)
        for slot in old { place(slot, hash: slot.hash) }
    }

    // FNV-1a's constants, then a 64-bit finaliser (murmur3's fmix64) so the low bits that pick
    // the slot and the high bits kept in the control byte both depend on every byte.
    static let hashSeed: UInt64 = 0xcbf2_9ce4_8422_2325
    private static let hashPrime: UInt64 = 0x0000_0100_0000_01b3

    static func finish(_ state: UInt64) -> UInt64 {
        var h = state
        h ^= h >> 33
        h &*= 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        h &*= 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h
    }

    /// The control byte: the top 7 bits (the low bits pick the slot), never 0.
    private static func mark(_ hash: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: hash >> 57) | 0x80 }
}

/// Lookups over a pair of tables, one of exact names and one of wildcard suffixes (keyed by the
/// suffix without `*.`), in the order ``HostIndex`` defines: the exact name, then each proper
/// suffix after a dot from the longest to the shortest. One backward pass over the name hashes
/// every suffix; each is probed as the pass reaches the dot before it (shortest first).
enum HostMatch {
    /// The payload of the most specific pattern matching `name`: exact, else the longest wildcard.
    static func mostSpecific(_ name: String, exact: HostTable, wildcard: HostTable) -> UInt32? {
        let bytes = name.utf8.span
        let probeWildcards = wildcard.count > 0
        var longest: UInt32?
        var state = HostTable.hashSeed
        var position = bytes.count
        while position > 0 {
            let byte = bytes[position - 1]
            // `state` has hashed bytes[position...]: a suffix after a dot, longer than the last.
            if byte == UInt8(ascii: "."), probeWildcards,
               let payload = wildcard.find(bytes, from: position, hash: HostTable.finish(state)) {
                longest = payload
            }
            position -= 1
            state = HostTable.step(state, byte)
        }
        return exact.find(bytes, from: 0, hash: HostTable.finish(state)) ?? longest
    }

    /// The payload of every pattern matching `name`, most specific first.
    static func all(_ name: String, exact: HostTable, wildcard: HostTable) -> [UInt32] {
        let bytes = name.utf8.span
        var wildcards: [UInt32] = []
        var state = HostTable.hashSeed
        var position = bytes.count
        while position > 0 {
            let byte = bytes[position - 1]
            if byte == UInt8(ascii: "."), let payload = wildcard.find(bytes, from: position, hash: HostTable.finish(state)) {
                wildcards.append(payload)
            }
            position -= 1
            state = HostTable.step(state, byte)
        }
        let exactMatch = exact.find(bytes, from: 0, hash: HostTable.finish(state))
        return (exactMatch.map { [$0] } ?? []) + wildcards.reversed()
    }
}

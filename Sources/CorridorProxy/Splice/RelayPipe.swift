#if os(Linux)
/// A pipe a splice relay moves bytes through: its two descriptors and how many bytes it holds at
/// most, which is what one splice(2) into it can take. Pipes come from their loop's pool
/// (``EpollLoop/takePipe()``); a bulk direction may have its pipe enlarged
/// (``EpollLoop/enlarge(_:)``).
struct RelayPipe: Equatable {
    let read: Int32
    let write: Int32
    var capacity: Int

    /// A new pipe's capacity when the kernel does not say (its default, 16 pages).
    static let defaultCapacity = 65536
}
#endif

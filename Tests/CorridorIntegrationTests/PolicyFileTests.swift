import Testing

@testable import CorridorGateway

/// What a reload takes for a file being rewritten (no object at all), and what it must not.
struct PolicyFileTests {
    @Test(arguments: ["", "\n\n", "# rewritten soon\n---\n", "---\n...\n", "--- # a comment\n  \t\n", "...\n# x"])
    func aFileOfMarkersAndCommentsHoldsNoObjects(_ text: String) {
        #expect(PolicyFile.holdsNoObjects(text), "\(text.debugDescription)")
    }

    @Test(arguments: ["--- {apiVersion: corridor.dev/v1alpha1, kind: GatewayConfig, metadata: {name: g}, spec: {}}\n",
                      "# header\nkind: GatewayConfig\n", "---\n  apiVersion: corridor.dev/v1alpha1\n", "----\n", "...x\n"])
    func aFileWithContentHoldsObjects(_ text: String) {
        #expect(!PolicyFile.holdsNoObjects(text), "\(text.debugDescription)")
    }
}

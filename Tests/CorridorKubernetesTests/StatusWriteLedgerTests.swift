@testable import CorridorKubernetes
import Testing

/// When the gateway writes an `Accepted` condition: once per change, not again while the watch has
/// not echoed it, again when another writer overwrote it, and then with a growing pause.
@Suite struct StatusWriteLedgerTests {
    let start = ContinuousClock.now

    private func update(_ status: String, rv: String, uid: String = "u1") -> StatusUpdate {
        StatusUpdate(resource: .egressPolicies, namespace: "a", name: "p", uid: uid,
                     condition: KubeCondition(type: "Accepted", status: status, reason: status == "True" ? "Valid" : "Invalid", message: "m",
                                              observedGeneration: 1),
                     observedResourceVersion: rv)
    }

    @Test func theWrittenListKeepsOtherConditionsInPlace() {
        func condition(_ type: String, _ status: String = "True") -> KubeCondition {
            KubeCondition(type: type, status: status, reason: "R", message: "m", observedGeneration: 1)
        }
        let accepted = condition("Accepted", "False")
        // Another controller's condition with fields metav1.Condition lacks (and without a reason):
        // written back exactly as it was.
        let foreign = JSONValue.object([("lastHeartbeatTime", .string("2026-12-01T00:00:00Z")), ("severity", .string("Warning")),
                                        ("status", .string("True")), ("type", .string("Ready"))])
        let replaced = StatusUpdate(resource: .egressPolicies, namespace: "a", name: "p", uid: "u1", condition: accepted,
                                    observed: [condition("Synced").json, condition("Accepted").json, foreign, condition("Accepted").json])
        #expect(replaced.conditions == [condition("Synced").json, accepted.json, foreign])
        let added = StatusUpdate(resource: .egressPolicies, namespace: "a", name: "p", uid: "u1", condition: accepted, observed: [condition("Synced").json])
        #expect(added.conditions == [condition("Synced").json, accepted.json])
    }

    @Test func aRefusedWriteWaitsAGrowingPauseAndCountsNoConflict() {
        var ledger = StatusWriteLedger()
        ledger.written(update("True", rv: "10"), at: start)
        // The object changed (another controller's condition, say) and the next write was refused.
        ledger.refused(update("True", rv: "12"), at: start + .seconds(10))
        #expect(ledger.consider(update("True", rv: "13"), now: start + .milliseconds(10_500)) == (.wait(until: start + .seconds(11)), false))
        #expect(ledger.consider(update("True", rv: "13"), now: start + .seconds(11)) == (.write, false))
        ledger.refused(update("True", rv: "13"), at: start + .seconds(11))
        #expect(ledger.consider(update("True", rv: "14"), now: start + .seconds(12)) == (.wait(until: start + .seconds(13)), false))
        // Written at last: the write the refusals were for, not a rewrite over another writer.
        ledger.written(update("True", rv: "14"), at: start + .seconds(13))
        #expect(ledger.consider(update("True", rv: "14"), now: start + .seconds(14)) == (.skip, false))
        #expect(ledger.consider(update("True", rv: "16"), now: start + .seconds(14)) == (.write, true), "a real overwrite, written back at once")
    }

    @Test func aWriteIsNotRepeatedBeforeTheWatchEchoesIt() {
        var ledger = StatusWriteLedger()
        #expect(ledger.consider(update("True", rv: "10"), now: start) == (.write, false))
        ledger.written(update("True", rv: "10"), at: start)
        #expect(ledger.consider(update("True", rv: "10"), now: start + .seconds(1)) == (.skip, false))
        // A real change of what the gateway means is written at once.
        #expect(ledger.consider(update("False", rv: "10"), now: start + .seconds(1)) == (.write, false))
    }

    @Test func anOverwriteIsWrittenBackAndRepeatedOverwritesBackOff() {
        var ledger = StatusWriteLedger()
        var now = start
        ledger.written(update("True", rv: "10"), at: now)
        // Someone set it to something else (rv 12): written back at once, one conflict.
        #expect(ledger.consider(update("True", rv: "12"), now: now) == (.write, true))
        ledger.written(update("True", rv: "12"), at: now)
        // Again at rv 14, at once: a conflict, and now a wait of 1 s after the last write.
        now = now + .milliseconds(100)
        #expect(ledger.consider(update("True", rv: "14"), now: now) == (.wait(until: start + .seconds(1)), true))
        // The same overwrite seen by a later build is not a second conflict.
        #expect(ledger.consider(update("True", rv: "14"), now: now + .milliseconds(10)).conflict == false)
        now = start + .seconds(1)
        #expect(ledger.consider(update("True", rv: "14"), now: now) == (.write, false))
        ledger.written(update("True", rv: "14"), at: now)
        // Then 2 s, 4 s, ... up to 5 minutes.
        #expect(ledger.consider(update("True", rv: "16"), now: now) == (.wait(until: now + .seconds(2)), true))
        #expect(StatusWriteLedger.backoff(rewrites: 0) == .zero)
        #expect(StatusWriteLedger.backoff(rewrites: 3) == .seconds(4))
        #expect(StatusWriteLedger.backoff(rewrites: 40) == .seconds(300))
    }

    @Test func aRecreatedObjectAndAForgottenOneStartAfresh() {
        var ledger = StatusWriteLedger()
        ledger.written(update("True", rv: "10"), at: start)
        #expect(ledger.consider(update("True", rv: "10", uid: "u2"), now: start) == (.write, false))
        ledger.forget(update("True", rv: "10"))
        #expect(ledger.consider(update("True", rv: "10"), now: start) == (.write, false))
    }
}

"""Keeping the calibration promise in production: pure statistics over stored verdicts (no SQL, no HTTP).

- `sequential`: the alert test, a mixture of betting martingales per group (anytime-valid e-processes);
- `rates`: realised flag rates per week and group, with binomial bands around alpha;
- `signals`: what in a verdict makes it low-confidence (unmeasured photos, unseen phone, thin cell, ...);
- `blind_audit`: the keyed draw of blind samples and the missed-fraud / false-alarm share estimates;
- `staleness`: reference staleness per variety and season;
- `simulation`: simulated verdict streams for `grainproof bench monitor` and `bench blind-audit`.
"""

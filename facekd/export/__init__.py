"""Export stage: turn a student checkpoint into runtime artifacts with manifests and parity gates.

``formats.FORMATS`` is the one table of formats; ``build.export_checkpoint`` drives it;
``manifest.Manifest`` describes every artifact written.
"""

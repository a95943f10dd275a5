"""DICOM adapter: PACS objects (C-STORE or files) to FHIR R4 ImagingStudy bundles.

headers.py reads an object's header (never its pixels); study.py groups instances by
Study Instance UID; bundle.py builds the Bundle the broker indexes; collector.py
publishes each study once it has gone quiet; scp.py is the C-STORE receiver; folder.py
reads files on disk. See docs/adapters.md (DICOM).
"""

"""Video files: probe (`probe`), single frames (`frames`), encoding (`encode`), joining
(`stitch`), and the local renderer's generated pictures (`shots`).

Modules import PyAV and Pillow inside their functions, so importing this package
stays cheap for commands that never touch a video.
"""

"""What people and scripts see: tables (rich), JSON and CSV of the reports the API and the bench return,
the apply summary, ``show``'s heat map and the progress bar. It renders data it is given and computes
nothing of its own; it knows nothing of kernels. Nothing is imported here.
"""

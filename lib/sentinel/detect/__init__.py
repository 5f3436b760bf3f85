"""Detect: windows, scaler, models, scoring, thresholds, training, evaluation, batch scoring.

Pure numpy/pandas/Keras, never pyspark (training may receive a frame Spark cleaned).
``scoring`` is the only scoring code: training calibration, batch scoring and the streaming
UDF all call it.
"""

"""The parts of the re-benchmark's regression gate (`stages.rebenchmark`): the noise of a series
of runs, the rows judged against it, the evidence compared and the table."""

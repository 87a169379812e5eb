"""From the store to the paper's numbers: the metrics (pure functions of R matrices), the
analysis options, tables, figures, the HTML report and the summary `run` prints. May import
study, data, models (parameter counts) and store."""

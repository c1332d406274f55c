"""The data stage: what `--data` names (catalog), each source's rows made uniform (convert, cot), a file's
catalogue format recognised (schemas), the records
read, checked and drawn into the mixture (loader), duplicates removed (dedup), and a record turned into its
prompt and ids/labels (preprocess, chat_template, stats). Imports nothing of the later stages."""

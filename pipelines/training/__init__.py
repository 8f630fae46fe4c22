"""What the train and tune stages share: which runs to train (:mod:`.run_plan`) and the Ray Train worker that
trains one (:mod:`.train_worker`)."""

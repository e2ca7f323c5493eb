[
  inputs: ["{mix,.formatter}.exs", "native/*.exs", "{config,lib,test,bench,demo}/**/*.{ex,exs}"]
]

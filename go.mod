module github.com/cml-project/cml

go 1.26

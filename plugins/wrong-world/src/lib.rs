//! A valid component of a different world: it exports `greet`, not the saga `step`
//! interface. The host must refuse it on upload.

wit_bindgen::generate!({
    inline: "
        package acme:other@1.0.0;
        world greeter {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
